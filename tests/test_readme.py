"""The README's command lines run as written after its two commands (issue 36): each names a tox environment
that tox.ini defines, and what it hands the suite's command line parses there. The commands themselves are
replaced by recorders, so nothing trains; a bad flag, a missing environment or a renamed command fails."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO

README = (REPO / "README.md").read_text()
COMMANDS = ("list", "run", "status", "report", "publish", "cost", "sharpness", "tune", "plan")


def command_lines() -> list[str]:
    """Every command of the README's bash blocks (without its comment; each side of an ``&&``), and every
    inline one its prose shows that starts with ``tox``."""
    lines = [part.strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
             for line in block.splitlines() for part in re.sub(r"\s+#.*$", "", line).split("&&")]
    inline = re.findall(r"`((?:[A-Z_]+=\S+ )?tox [^`]+)`", README)
    inline = [re.sub(r"^[A-Z_]+=\S+ ", "", line) for line in inline if "ARGS" not in line]  # ARGS: the syntax
    return [line for line in lines if line] + inline


def tox_envs() -> dict[str, str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return {s.removeprefix("testenv:"): ini[s].get("commands", "") for s in ini.sections()
            if s.startswith("testenv:")}


def suite_args(line: str) -> list[str] | None:
    """What a README line hands ``python -m suite``, or None if it runs something else."""
    words = shlex.split(line)
    if words[:4] == ["tox", "-e", "suite", "--"]:
        return words[4:]
    if words[:3] == ["tox", "-e", "benchmark"]:
        base = shlex.split(tox_envs()["benchmark"].replace("{posargs}", ""))
        return base[base.index("suite") + 1:] + words[4:]
    if words[:3] == ["tox", "exec", "-e"] and ["-m", "suite"] in [words[i:i + 2] for i in range(len(words))]:
        at = next(i for i in range(len(words)) if words[i:i + 2] == ["-m", "suite"])
        return words[at + 2:]
    return None


def test_the_readme_stays_an_entry_point():
    assert len(README.splitlines()) <= 150
    assert "<!-- findings" not in README  # the generated findings live in results/README.md, which it links
    assert "(results/README.md)" in README


def test_every_tox_environment_the_readme_names_exists():
    envs = tox_envs()
    named = {m for line in command_lines() for m in re.findall(r"tox (?:exec )?-e (\w[\w-]*)", line)}
    named |= set(re.findall(r"`tox -e (\w[\w-]*)", README))
    assert named >= {"benchmark", "test", "suite"} and named <= set(envs), named - set(envs)
    assert "python -m suite {posargs" in envs["suite"]


@pytest.mark.parametrize("line", [line for line in command_lines() if suite_args(line) is not None])
def test_each_suite_command_line_of_the_readme_parses(line, monkeypatch):
    from suite.cli import main

    seen = []
    for name in COMMANDS:
        monkeypatch.setattr(f"suite.cli.cmd_{name}", lambda args, name=name: seen.append((name, args)) or 0)
    args = suite_args(line)
    if "--help" in args:  # argparse prints the help and leaves
        with pytest.raises(SystemExit) as left:
            main(args)
        assert left.value.code == 0 and not seen
        return
    assert main(args) == 0, line
    assert [name for name, _ in seen] == [args[0]]


def test_the_readme_shows_what_these_tests_parse():
    """The parsing tests below are generated from the README: a README whose blocks they no longer find would
    leave them vacuous, so the commands they must find are named here."""
    parsed = {suite_args(line)[0] for line in command_lines() if suite_args(line) is not None and suite_args(line)}
    assert parsed >= set(COMMANDS), set(COMMANDS) - parsed
    assert any("tools/check_reproduction.py" in line for line in command_lines())


def test_the_tools_the_readme_runs_exist_and_take_its_flags():
    checked = 0
    for line in command_lines():
        for tool, rest in re.findall(r"python (tools/\S+\.py)((?: --?[\w-]+(?: [^-\s]\S*)?)*)", line):
            checked += 1
            assert (REPO / tool).is_file(), tool
            usage = subprocess.run([sys.executable, str(REPO / tool), "--help"], capture_output=True, text=True,
                                   cwd=REPO, timeout=120).stdout
            for flag in re.findall(r"--[\w-]+", rest):
                assert flag in usage, (tool, flag)
    assert checked, "no tools/ command found in the README"
