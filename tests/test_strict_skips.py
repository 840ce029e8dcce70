"""CI fails on a skip nobody declared (issue 36): tried in a pytest of its own on two throwaway tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import strict_skips

HERE = Path(__file__).resolve().parent


def session(tmp_path: Path, reason: str, strict: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\ndef test_runs():\n    pass\n\n"
        f"def test_skips():\n    pytest.skip({reason!r})\n")
    # not this session's: a pytest-xdist worker's variables would make the new session think it is one
    env = {k: v for k, v in os.environ.items() if k != strict_skips.STRICT and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if strict:
        env[strict_skips.STRICT] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "strict_skips", "-p", "no:cacheprovider",
                           "-q", str(tmp_path / "test_it.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("strict", [False, True])
def test_an_undeclared_skip_fails_a_strict_session_only(tmp_path, strict):
    out = session(tmp_path, "nobody said this was fine", strict)
    assert out.returncode == (1 if strict else 0), out.stdout + out.stderr
    assert ("test_it.py::test_skips: nobody said this was fine" in out.stdout) == strict, out.stdout


def test_a_declared_skip_passes_a_strict_session(tmp_path):
    reason = next(iter(strict_skips.DECLARED))
    out = session(tmp_path, reason, strict=True)
    assert out.returncode == 0 and "1 passed, 1 skipped" in out.stdout, out.stdout + out.stderr


def test_ci_runs_the_tests_strict():
    ci = (HERE.parent / ".ci" / "run").read_text()
    assert f"export {strict_skips.STRICT}=1" in ci
    tox = (HERE.parent / "tox.ini").read_text()
    assert strict_skips.STRICT in tox.split("pass_env")[1]  # tox hands it to pytest
