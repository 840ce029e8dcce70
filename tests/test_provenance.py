"""Provenance that cannot lie (issue 23, item 5): a record says which commit made it, and marks it dirty when
something the run read (its profile's files, the suite's code) is not that commit's; it holds the hash of the
profile's resolved content; publishing refuses what is not a clean commit's. Checked in throwaway git
checkouts, and on the published records, whose run_ids must not move."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

from suite import measure, store
from suite.cli import main
from suite.config import load_profile
from suite.sweep import runs_for

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

TINY = """seeds = 1
optimizers = ["sgd"]
[train]
dataset = "synthetic"
model = "resnet8"
epochs = 1
batch_size = 32
train_subset = 96
test_subset = 50
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A checkout of a tiny tree: code under suite/, a committed profile, git-ignored caches and scratch."""
    root = tmp_path / "repo"
    (root / "suite" / "profiles").mkdir(parents=True)
    (root / "suite" / "harness.py").write_text("x = 1\n")
    (root / "suite" / "profiles" / "committed.toml").write_text(TINY)
    (root / ".gitignore").write_text("__pycache__/\nscratch/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "a tiny tree")
    measure._git_state.cache_clear()  # read once per process: each test's tree is new
    yield root
    measure._git_state.cache_clear()


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def test_an_untracked_profile_the_run_read_makes_it_dirty(repo):
    mine = repo / "suite" / "profiles" / "gpu.toml"
    mine.write_text(TINY)
    assert measure.git_state(repo, [mine]) == (f"{head(repo)}-dirty", {"suite/profiles/gpu.toml": "untracked"})
    # a profile it extends is read too
    child = repo / "child.toml"
    child.write_text('extends = "suite/profiles/gpu.toml"\n')
    read = load_profile(str(child)).source.files
    assert read == (child.resolve(), mine.resolve())
    assert measure.git_state(repo, read)[1] == {"child.toml": "untracked", "suite/profiles/gpu.toml": "untracked"}


def test_untracked_files_the_run_did_not_read_leave_it_clean(repo):
    (repo / "notes.txt").write_text("to do\n")
    (repo / "results" / "runs" / "cpu").mkdir(parents=True)
    (repo / "results" / "runs" / "cpu" / "sgd-s0-0123456789.json").write_text("{}")
    (repo / "suite" / "profiles" / "other.toml").write_text(TINY)  # a profile this run was not configured from
    (repo / "suite" / "table.csv").write_text("a,b\n")  # not code
    assert measure.git_state(repo, [repo / "suite" / "profiles" / "committed.toml"]) == (head(repo), {})


def test_changed_or_new_code_makes_it_dirty(repo):
    (repo / "suite" / "harness.py").write_text("x = 2\n")
    assert measure.git_state(repo) == (f"{head(repo)}-dirty", {"suite/harness.py": "modified"})
    measure._git_state.cache_clear()
    (repo / "suite" / "harness.py").write_text("x = 1\n")
    (repo / "suite" / "extra.py").write_text("y = 1\n")  # code an import may reach, in no commit
    assert measure.git_state(repo)[1] == {"suite/extra.py": "untracked"}
    measure._git_state.cache_clear()
    (repo / "suite" / "extra.py").unlink()
    (repo / "suite" / "profiles" / "committed.toml").write_text(TINY.replace("epochs = 1", "epochs = 2"))
    assert measure.git_state(repo)[1] == {"suite/profiles/committed.toml": "modified"}


def test_git_ignored_files_leave_it_clean_unless_the_run_read_them(repo):
    (repo / "suite" / "__pycache__").mkdir()
    (repo / "suite" / "__pycache__" / "cached.py").write_text("z = 1\n")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "try.py").write_text("z = 1\n")
    assert measure.git_state(repo) == (head(repo), {})
    measure._git_state.cache_clear()
    ignored = repo / "scratch" / "mine.toml"  # a profile no commit holds, ignored or not
    ignored.write_text(TINY)
    assert measure.git_state(repo, [ignored])[1] == {"scratch/mine.toml": "untracked"}


def test_a_profile_outside_the_checkout_cannot_be_vouched_for(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(TINY)
    commit, dirty = measure.git_state(repo, [elsewhere])
    assert commit == f"{head(repo)}-dirty" and dirty == {str(elsewhere.resolve()): "outside the checkout"}
    env = {"git_commit": commit, "git_dirty_files": dirty}
    assert not store.clean_commit({"env": env}) and "outside the checkout" in store.provenance(env)


def test_clean_commit_needs_every_mark_clean():
    assert store.clean_commit({"env": {"git_commit": "a" * 40, "git_dirty_files": {}}})
    assert store.clean_commit({"env": {"git_commit": "a" * 40}})  # records made before the list
    assert not store.clean_commit({"env": {"git_commit": "a" * 40 + "-dirty"}})
    assert not store.clean_commit({"env": {"git_commit": None}})
    assert not store.clean_commit({"env": {"git_commit": "a" * 40, "git_dirty_files": {"p.toml": "untracked"}}})


def test_the_profile_hash_is_of_its_resolved_content(tmp_path):
    flat = tmp_path / "flat.toml"
    flat.write_text(TINY)
    first, again = load_profile(str(flat)).source, load_profile(str(flat)).source
    assert first.sha256 == again.sha256 and len(first.sha256) == 64 and first.files == (flat.resolve(),)
    flat.write_text(TINY.replace("epochs = 1", "epochs = 2"))
    assert load_profile(str(flat)).source.sha256 != first.sha256
    # what a profile resolves to is hashed, not the text that says it: a comment changes nothing, and a
    # profile extending another hashes as the merged table it is
    flat.write_text("# a comment\n" + TINY)
    assert load_profile(str(flat)).source.sha256 == first.sha256
    (tmp_path / "base.toml").write_text(TINY.replace("epochs = 1", "epochs = 3"))
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[train]\nepochs = 1\n')
    source = load_profile(str(child)).source
    assert source.sha256 == first.sha256 and source.files == (child.resolve(), (tmp_path / "base.toml").resolve())
    shipped = load_profile("cpu").source.as_record()
    assert shipped["name"] == "cpu" and shipped["files"] == ["suite/profiles/cpu.toml"]


def test_published_run_ids_do_not_move():
    """The profile's source travels with every run but is no part of its identity: the published cpu records'
    file names are the run_ids the cpu profile plans today."""
    published = {p.stem: json.loads(p.read_text()) for p in (REPO / "results" / "runs" / "cpu").glob("*.json")}
    assert len(published) >= 100, "the published cpu records are part of the checkout"
    runs = runs_for(load_profile("cpu"), check_device=False)
    assert {r.run_id for r in runs} >= set(published)
    for run in runs:
        unsourced = dataclasses.replace(run, source=None)
        assert run.source is not None and unsourced == run and unsourced.run_id == run.run_id
        if run.run_id in published:
            assert published[run.run_id]["config"] == json.loads(json.dumps(run.as_dict()))


def test_a_run_from_an_untracked_profile_is_recorded_dirty_and_not_published(repo, tmp_path, monkeypatch, capsys):
    real = measure.git_state
    monkeypatch.setattr(measure, "git_state", lambda root=None, read=(): real(repo, read))  # the run's checkout
    path = repo / "suite" / "profiles" / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "mine"
    assert main(["run", "--profile", str(path), "--results-dir", str(out), "--no-progress", "--no-report"]) == 0
    [record] = [json.loads(p.read_text()) for p in (out / "runs" / "tiny").glob("*.json")]
    assert record["env"]["git_commit"] == f"{head(repo)}-dirty"
    assert record["env"]["git_dirty_files"] == {"suite/profiles/tiny.toml": "untracked"}
    assert record["profile"] == load_profile(str(path)).source.as_record()
    assert record["profile"]["files"] == [str(path.resolve())]  # outside the suite's own checkout: in full
    capsys.readouterr()
    dest = tmp_path / "published"
    assert main(["publish", "--profile", "tiny", "--from", str(out), "--to", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert "clean commit" in err and "suite/profiles/tiny.toml untracked" in err and not dest.exists()
    # the cost command publishing into results/ refuses the same tree before measuring anything
    monkeypatch.chdir(tmp_path)
    assert main(["cost", "--profile", str(path), "--out", "results"]) == 2
    assert "suite/profiles/tiny.toml untracked" in capsys.readouterr().err and not (tmp_path / "results").exists()


def test_every_profile_file_committed_with_published_results_loads_from_the_checkout():
    """The profiles beside published tables (the GPU cost tables') resolve inside the repository: none
    extends a file that only existed on the machine that ran it."""
    files = sorted((REPO / "results").rglob("*.toml"))
    assert files, "the published GPU cost tables keep their profiles beside them"
    from suite.config import PROFILE_DIR  # the shipped profiles: under tox, in the installed package

    for path in files:
        profile = load_profile(str(path))
        inside = [f.is_relative_to(REPO) or f.is_relative_to(PROFILE_DIR.resolve()) for f in profile.source.files]
        assert all(inside), (path, profile.source.files)


def test_a_table_whose_commit_lacks_its_profile_says_so_in_its_headings(repo):
    from suite import report

    commit = head(repo)
    records = [{"config": {"profile": "committed"}, "env": {"git_commit": commit}, "profile": None},
               {"config": {"profile": "gone"}, "env": {"git_commit": commit}, "profile": None}]
    gaps = report.provenance_gaps(records, repo)
    assert gaps == {("gone", ""): f"provenance incomplete: commit {commit[:7]} holds no suite/profiles/gone.toml"}
    assert report.provenance_gaps(records, repo.parent / "nowhere") == {}  # git cannot tell: nothing is said
