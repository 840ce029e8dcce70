"""The study's choices are data (issue 36 §3): suite/study.toml holds the claims, the time goal, which cost
table prices which profile and where claims are not judged; claims.py and frontier.py are mechanism, and a
study of one's own replaces the file (SUITE_STUDY), not the code."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from helpers import REPO

from suite import claims, frontier

STUDY = """time_goal = 1.1
not_on = ["smoke"]
[priced_by]
mine = "cost"
[[claims]]
name = "mine-beats-sgd"
statement = "mine is more accurate than SGD"
source = "me"
test = "beats"
subjects = ["sam"]
reference = "sgd"
metric = "test_acc"
"""


def test_the_mechanism_holds_no_study_choice():
    """No claim, goal or pricing is written in the code: they come from the study file."""
    for name in ("claims.py", "frontier.py"):
        tree = ast.parse((REPO / "suite" / name).read_text())
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            assert not isinstance(value, (ast.Dict, ast.Tuple)) or not any(
                isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Claim" for c in ast.walk(value)), name
            assert not (isinstance(value, ast.Constant) and isinstance(value.value, float)), (name, ast.unparse(node))
            assert not isinstance(value, ast.Dict), (name, ast.unparse(node))
    assert claims.STUDY_FILE.name == "study.toml" and claims.CLAIMS == claims.STUDY.claims
    assert claims.ALPHA == claims.STUDY.alpha == 0.05
    assert frontier.TIME_GOAL == claims.STUDY.time_goal and frontier.PRICED_BY == claims.STUDY.priced_by


def test_a_study_of_ones_own_replaces_the_file(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    code = ("from suite import claims, frontier\n"
            "print([c.name for c in claims.CLAIMS], claims.CLAIMS[0].not_on, frontier.TIME_GOAL, frontier.PRICED_BY)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "SUITE_STUDY": str(study)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['mine-beats-sgd'] ('smoke',) 1.1 {'mine': 'cost'}"


@pytest.mark.parametrize("bad, says", [
    ("time_goal = -1\n", "time_goal must be a number above 0"),
    ("alpha = 1.5\n", "alpha must be a number between 0 and 1"),
    ("goal = 1\n", "unknown key 'goal'"),
    ("not_on = \"cost\"\n", "not_on must be a list"),
    ("[priced_by]\ncpu = 3\n", "[priced_by] must map"),
    ("[time_goals]\nmine = 0\n", "[time_goals] mine must be a number above 0"),
])
def test_a_bad_study_file_is_one_line_naming_what_is_wrong(tmp_path, bad, says):
    study = tmp_path / "study.toml"
    study.write_text(bad + STUDY.split("\n", 1)[1].replace("not_on", "# not_on").replace("[priced_by]\nmine", "#"))
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        claims.load_study(study)


@pytest.mark.parametrize("content", ["time_goal = 0\n", None])
def test_a_bad_or_missing_study_file_stops_any_command_with_one_line_and_exit_2(tmp_path, content):
    study = tmp_path / "study.toml"
    if content is not None:
        study.write_text(content)
    out = subprocess.run([sys.executable, "-m", "suite", "list"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**os.environ, "SUITE_STUDY": str(study)})
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert out.stderr.startswith(f"error: study file {str(study)!r}") and out.stderr.count("\n") == 1, out.stderr


def test_the_shipped_study_keeps_the_claims_the_records_were_judged_by():
    names = [c.name for c in claims.CLAIMS]
    assert names[:2] == ["sam-beats-sgd", "ssam-keeps-sam-accuracy"] and len(names) == len(set(names)) == 11
    keeps = [c for c in claims.CLAIMS if c.test == "keeps"]
    assert {c.margin.share for c in keeps} == {0.5} and all(c.not_on == ("cost", "gpu-cost") for c in claims.CLAIMS)
