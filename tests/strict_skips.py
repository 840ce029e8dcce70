"""Skips that cannot pass unseen (issue 36): with ``SUITE_STRICT_SKIPS=1`` (``.ci/run`` sets it) a session
fails if any test, or any module, was skipped for a reason that is not declared below. A skip that CI would
otherwise print and pass is how a test that never runs went unnoticed (the published-records test skipped
under tox for months because the installed wheel has no ``results/``).

Declared reasons are the few a CI machine can legitimately meet; each is matched as a prefix of the skip's
reason. Add one here only with the reason it is fine to skip there.
"""

from __future__ import annotations

import os

import pytest

STRICT = "SUITE_STRICT_SKIPS"
DECLARED = {
    "root may write anywhere": "CI runs as root: a read-only directory does not stop root",
    "this machine has CUDA": "the CPU-only error path cannot be reached on a GPU machine",
    "CUDA events need a GPU": "the deferred step clock's CUDA path: CI machines have no GPU; where one is lent, "
                              "pytest tests/test_gpu_fast.py -k deferred_clock runs it (docs/gpu-fast.md)",
    "starts processes every round": "a benchmark of process start-up, run by tox -e bench only",
    "no Slurm here": "tox -e test collects the Slurm module and deselects its tests; tox -e slurm runs them with "
                     "SUITE_SLURM=required, under which a missing Slurm fails instead of skipping",
}
_SKIPPED: list[tuple[str, str]] = []


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _note(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _reason(report)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note(report)


def undeclared(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(node, why) for node, why in skipped if not any(why.startswith(ok) for ok in DECLARED)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # under pytest-xdist the controller receives every worker's reports; a worker decides nothing
    if not os.environ.get(STRICT) or hasattr(session.config, "workerinput"):
        return
    bad = undeclared(_SKIPPED)
    if bad:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"{STRICT}: {len(bad)} skipped for a reason not declared in tests/strict_skips.py:",
                 *(f"  {node}: {why}" for node, why in bad)]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
