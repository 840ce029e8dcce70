"""A sweep's duration and size come from records and the planner, not from typed prose (issue 36 §3)."""

from __future__ import annotations

import json

from helpers import REPO

from suite import estimate, store
from suite.config import load_profile
from suite.sweep import runs_for


def test_makespan_deals_runs_to_the_first_free_worker():
    assert estimate.makespan([3, 1, 1, 1], 2) == 3
    assert estimate.makespan([1, 1, 3], 2) == 4
    assert estimate.makespan([2, 2, 2], 1) == 6


def test_runs_are_priced_by_records_with_the_same_settings_whatever_their_profile_and_seed(tmp_path):
    runs = runs_for(load_profile("smoke"), optimizers=["sgd", "sam"], seeds=2, check_device=False)
    folder = tmp_path / "runs" / "elsewhere"
    folder.mkdir(parents=True)
    for k, (run, seconds) in enumerate([(runs[0], 60.0), (runs[1], 120.0), (runs[1], 180.0)]):
        config = {**json.loads(json.dumps(run.as_dict())), "profile": "elsewhere", "seed": 7 + k}
        record = {"schema": store.SCHEMA, "metrics": {}, "config": config, "wall_seconds": seconds}
        (folder / f"r{k}.json").write_text(json.dumps(record))
    est = estimate.estimate(runs, estimate.recorded_seconds(tmp_path), workers=1)
    assert [r.optimizer for r in runs] == ["sgd", "sam", "sgd", "sam"]
    assert est.runs == 4 and est.optimizers == 2 and est.priced == 4
    assert est.seconds == 2 * 60 + 2 * 150  # sgd's one record, sam's mean of two
    assert estimate.estimate(runs, {}, workers=1).text().startswith("no recorded run")


def test_the_readmes_duration_of_the_main_job_is_what_the_records_say():
    readme = (REPO / "README.md").read_text()
    assert "<!-- duration of benchmark, 2 workers -->" in readme
    assert estimate.rewrite_durations(readme, REPO / "results", load_profile) == readme
    assert "--profile benchmark --workers 2" in (REPO / "tox.ini").read_text()
    stale = readme.replace("about 88 minutes", "about 65 minutes")
    assert stale != readme and estimate.rewrite_durations(stale, REPO / "results", load_profile) == readme
