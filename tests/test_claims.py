"""Claims and their verdicts: known answers on synthetic records, Holm's correction against a hand-checked
example, bounds that agree with the verdicts, a user's own claims, and the README's findings tied to the
published records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from suite import claims
from suite.claims import Claim, Margin

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = ("ssam-f-structured-explicit", "ssam-f-nm-explicit", "ssam-d-unstructured-explicit")


def table(accuracy: dict[str, list[float]], profile: str = "p") -> pd.DataFrame:
    """One row per optimizer and seed, as ``report.run_rows`` gives them."""
    return pd.DataFrame([{"profile": profile, "setting": "", "budget": "epochs", "optimizer": name, "seed": seed,
                          "test_acc": acc, "status": "finished"}
                         for name, accs in accuracy.items() for seed, acc in enumerate(accs)])


def keeps(margin: float) -> Claim:
    return Claim("keeps", "keeps SAM's accuracy", "test", metric="test_acc", test="keeps", subjects=SUBJECTS,
                 reference="sam", margin=Margin(at_least=margin), scale=100.0)


def test_a_claim_that_holds_one_that_fails_and_one_inconclusive():
    """δ = 2 points. One subject is SAM within ±0.1 point: holds. One loses 10 points: fails. One loses 2
    points with a spread of several: inconclusive, with the seeds that would decide it."""
    rng = np.random.default_rng(0)
    sam = list(0.40 + rng.normal(0, 0.02, 8))
    rows = table({"sam": sam,
                  SUBJECTS[0]: [a + d for a, d in zip(sam, rng.uniform(-0.001, 0.001, 8))],
                  SUBJECTS[1]: [a - 0.10 + d for a, d in zip(sam, rng.uniform(-0.001, 0.001, 8))],
                  SUBJECTS[2]: [a - 0.02 + d for a, d in zip(sam, [0.05, -0.05, 0.03, -0.03, 0.06, -0.06, 0.01,
                                                                   -0.01])]})
    v = claims.judge(keeps(0.02), rows).copy()
    by = {r["subject"]: r for r in v}
    assert by[SUBJECTS[0]]["verdict"] == "holds" and by[SUBJECTS[0]]["bound"] > -0.02
    assert by[SUBJECTS[1]]["verdict"] == "fails" and by[SUBJECTS[1]]["bound"] < -0.02
    assert by[SUBJECTS[2]]["verdict"] == "inconclusive" and by[SUBJECTS[2]]["seeds_needed"] is None  # on δ exactly
    assert all(r["family"] == 3 and r["n"] == 8 for r in v)


def test_holm_against_a_hand_checked_example():
    """p = 0.01, 0.04, 0.03, 0.005 at α = 0.05. Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 =
    0.04 -> 0.06 (monotone). Step-down: 0.005 < α/4 and 0.01 < α/3 rejected; 0.03 ≥ α/2 stops."""
    p = [0.01, 0.04, 0.03, 0.005]
    assert claims.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert claims.holm_levels(p) == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4])


def test_the_one_sided_test_and_the_seeds_needed_by_hand():
    # d = 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.464 with 2 degrees of freedom
    assert claims.one_sided_p([1.0, 2.0, 3.0], 0.0, "greater") == pytest.approx(stats.t.sf(2 * math.sqrt(3), 2))
    assert claims.one_sided_p([1.0, 2.0, 3.0], -2.0, "less") == pytest.approx(0.5)
    assert claims.one_sided_p([1.0], 0.0, "greater") == 1.0  # one seed shows nothing
    n = claims.seeds_needed(1.0, 2.0, 0.05)
    assert stats.t.ppf(0.95, n - 1) * 2 / math.sqrt(n) < 1 <= stats.t.ppf(0.95, n - 2) * 2 / math.sqrt(n - 1)


@pytest.mark.parametrize("seed", range(20))
def test_a_bound_excludes_the_threshold_exactly_where_the_verdict_decides(seed):
    rng = np.random.default_rng(seed)
    sam = list(0.4 + rng.normal(0, 0.02, 4))
    rows = table({"sam": sam, **{s: list(np.array(sam) + rng.normal(rng.uniform(-0.05, 0.05), 0.02, 4))
                                for s in SUBJECTS}})
    for v in claims.judge(keeps(0.01), rows):
        beyond = v["bound"] > -0.01 if v["bound_side"] == "holds" else v["bound"] < -0.01
        assert beyond == (v["verdict"] != "inconclusive"), v


def test_the_paper_claims_find_the_paper_form_variants_and_skip_what_is_not_measured():
    rows = table({"sgd": [0.3, 0.31], "sam": [0.4, 0.41], "ssam-f-nm-implicit": [0.4, 0.4],
                  "ssam-d-unstructured-implicit": [0.4, 0.4]})  # the second is this suite's extension
    out = claims.verdicts(rows)
    assert set(out["claim"]) == {"sam-beats-sgd", "ssam-keeps-sam-accuracy",  # no sharpness measured here
                                 "extensions-keep-sam-accuracy"}
    keep = out[out["claim"] == "ssam-keeps-sam-accuracy"]
    assert list(keep["subject"]) == ["ssam-f-nm-implicit"]
    assert list(out[out["claim"] == "extensions-keep-sam-accuracy"]["subject"]) == ["ssam-d-unstructured-implicit"]
    assert keep["margin"].iloc[0] == pytest.approx(0.5 * 0.1)  # half of SAM's 10-point gain over SGD
    assert claims.verdicts(table({"sgd": [0.3], "sam": [0.4]}, profile="gpu-cost")).empty  # no accuracy claim


def test_the_field_claims_take_esam_and_the_published_methods_each_family_corrected_alone():
    rows = table({"sgd": [0.30, 0.31, 0.29], "sam": [0.40, 0.42, 0.41], "esam": [0.40, 0.41, 0.41],
                  "looksam": [0.39, 0.42, 0.40], "msam": [0.30, 0.33, 0.31], "sam-quarter-ascent": [0.40, 0.41, 0.42]})
    out = claims.verdicts(rows)
    field = out[out["claim"] == "field-keeps-sam-accuracy"]
    assert list(field["subject"]) == ["esam", "looksam", "msam"]
    assert set(field["family"]) == {3}
    assert field.set_index("subject").loc["msam", "verdict"] == "fails"  # 10 points below SAM, margin 5
    assert list(out[out["claim"] == "extensions-keep-sam-accuracy"]["subject"]) == ["sam-quarter-ascent"]


def test_the_table_says_n_the_correction_and_what_a_bound_is():
    rows = table({"sgd": [0.30, 0.31, 0.29], "sam": [0.40, 0.42, 0.41]})
    text = claims.markdown(claims.verdicts(rows))
    assert "Holm" in text and "α = 0.05" in text and "| n " in text and "**holds**" in text
    assert "one-sided confidence bound" in text


def test_a_users_claims_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[[claims]]\nname = "mine"\nstatement = "my SSAM keeps SAM"\nmetric = "test_acc"\n'
                    'test = "keeps"\nsubjects = ["ssam-f-nm-explicit"]\nreference = "sam"\nmargin = 0.02\n')
    (mine,) = claims.load_claims(path)
    assert mine.source == "user" and mine.margin.at_least == 0.02 and mine.subjects == ("ssam-f-nm-explicit",)
    path.write_text('[[claims]]\nname = "x"\nstatment = "typo"\n')
    with pytest.raises(ValueError, match="unknown key 'statment'"):
        claims.load_claims(path)
    path.write_text('[[claims]]\nname = "x"\nstatement = "s"\nmetric = "test_acc"\ntest = "wins"\n'
                    'subjects = ["sam"]\nreference = "sgd"\n')
    with pytest.raises(ValueError, match="test must be one of"):
        claims.load_claims(path)


def test_report_takes_a_claims_file_and_a_bad_one_is_one_line(tmp_path, capsys):
    import shutil

    from suite.cli import main

    results = tmp_path / "r"
    shutil.copytree(ROOT / "results" / "runs" / "cpu-noise", results / "runs" / "cpu-noise")
    mine = tmp_path / "mine.toml"
    mine.write_text('[[claims]]\nname = "two-fifths-keeps-sam"\nstatement = "SAM from two fifths of the batch keeps '
                    'SAM\'s accuracy"\nmetric = "test_acc"\ntest = "keeps"\nsubjects = ["sam-two-fifths-ascent"]\n'
                    'reference = "sam"\nmargin = 0.02\nscale = 100.0\n')
    assert main(["report", "--results-dir", str(results), "--claims", str(mine)]) == 0
    summary = (results / "summary.md").read_text()
    assert summary.index("## Verdicts") < summary.index("### Profile")
    assert "`two-fifths-keeps-sam`" in summary and "`ssam-keeps-sam-accuracy`" in summary
    mine.write_text("[[claims]]\nnope = 1\n")
    capsys.readouterr()
    assert main(["report", "--results-dir", str(results), "--claims", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: claims file") and "\n" not in err


MY_CLAIM = ('[[claims]]\nname = "nm-keeps-sam"\nstatement = "my N:M SSAM keeps SAM\'s accuracy"\n'
            'metric = "test_acc"\ntest = "keeps"\nsubjects = ["ssam-f-nm-explicit"]\nreference = "sam"\n'
            'margin = 0.02\n')


def test_a_claim_declared_in_a_profile_is_judged_on_that_profiles_tables_alone(tmp_path):
    from suite.config import load_profile

    path = tmp_path / "mine.toml"
    path.write_text('seeds = 2\noptimizers = ["sam", "ssam-f-nm-explicit"]\n' + MY_CLAIM
                    + '[train]\ndataset = "synthetic"\nmodel = "resnet8"\n')
    (claim,) = load_profile(str(path)).claims
    assert claim.on == ("mine",) and claim.not_on == () and claim.source == "user"
    accuracy = {"sam": [0.40, 0.42, 0.41], "ssam-f-nm-explicit": [0.405, 0.421, 0.409]}
    rows = pd.concat([table(accuracy, "mine"), table(accuracy, "other")])
    v = claims.verdicts(rows, claims=[claim])
    assert list(v["table"]) == ["mine"] and list(v["verdict"]) == ["holds"]


def test_a_profile_whose_claims_are_bad_is_one_line_exit_2(tmp_path, capsys):
    from suite.cli import main

    path = tmp_path / "mine.toml"
    path.write_text('seeds = 1\noptimizers = ["sam"]\n' + MY_CLAIM.replace('test = "keeps"', 'test = "wins"')
                    + '[train]\ndataset = "synthetic"\nmodel = "resnet8"\n')
    assert main(["run", "--profile", str(path), "--results-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "profile mine: claim nm-keeps-sam: test must be" in err
    assert not (tmp_path / "out").exists()


def test_the_report_reads_the_claims_of_the_records_profiles(tmp_path):
    """A run's profile file, as its records name it, is read again by the report: its claims get verdicts."""
    from suite.cli import main

    path = tmp_path / "mine.toml"
    path.write_text('seeds = 2\noptimizers = ["sam", "ssam-f-nm-explicit"]\n' + MY_CLAIM
                    + '[train]\ndataset = "synthetic"\nmodel = "resnet8"\nepochs = 1\nbatch_size = 32\n'
                    'train_subset = 64\ntest_subset = 32\n')
    assert main(["run", "--profile", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "### Verdicts — `mine`" in summary and "`nm-keeps-sam`" in summary


def test_the_readmes_findings_are_what_the_published_records_say():
    """Every number in results/README.md's findings blocks is generated from results/ (python -m suite publish
    rewrites them); a stale block fails here. The README links them and carries none of its own."""
    from suite import report

    readme = ROOT / "results" / "README.md"
    blocks = report.findings_blocks(readme.read_text())
    assert blocks, f"{readme} has no findings block"
    for table, block in blocks:
        assert block.strip() == report.readme_findings(ROOT / "results", table).strip(), (readme, table)
    assert not report.findings_blocks((ROOT / "README.md").read_text())


def test_every_number_the_results_readme_quotes_about_a_profile_is_in_its_tables():
    """Prose that stays hand-written (each profile's "What it shows" in results/README.md, below the generated
    findings) quotes numbers; each must be one that profile's tables in summary.md (its verdicts, frontier,
    summary and sharpness tables) or its cost tables (results/<profile>-cost/, and any made with that profile)
    print — or, in a paragraph that names another published profile (`cpu`), that profile's — so records
    published without the prose rewritten fail here. A weak check: a number found anywhere in those tables
    passes."""
    import re

    from suite import frontier, report

    readme = (ROOT / "results" / "README.md").read_text()
    summary = re.split(r"^(?=##+ )", (ROOT / "results" / "summary.md").read_text(), flags=re.M)
    checked = 0

    steps = frontier.cost_steps(ROOT / "results")  # a cost table made with a profile is one of its tables too

    def tables_of(name: str) -> str:
        found = "".join(s for s in summary if f"`{name}`" in s.splitlines()[0])
        mine = {*(ROOT / "results").glob(f"{name}-cost/**/cost.md"),
                *(ROOT / "results" / (t if t != "cost" else "") / "cost.md" for t, step in steps.items()
                  if step and step["profile"] == name)}
        found += "".join(p.read_text() for p in sorted(mine))
        return found.replace("−", "-")

    published = set(re.findall(r"^# .*profile `([^`]+)`", readme, flags=re.M))
    for section in re.split(r"^(?=# )", readme, flags=re.M):
        named = re.match(r"# .*profile `([^`]+)`", section)
        if not named or "## What it shows" not in section or named.group(1) == "cost":  # cost: test_cost
            continue
        name = named.group(1)
        shows = section.split("## What it shows", 1)[1].split("\n## ", 1)[0]
        prose = shows.split(report.FINDINGS[1])[-1]
        quoted, missing = [], []
        for paragraph in re.split(r"\n(?=\s*- )|\n\n", prose):
            profiles = {name} | (set(re.findall(r"`([^`]+)`", paragraph)) & published)
            tables = "".join(tables_of(p) for p in sorted(profiles))
            here = re.findall(r"(?<![\w.])[+−-]?\d+\.\d\d(?!\d)", paragraph)
            quoted += here
            missing += [q for q in here if q.replace("−", "-").lstrip("+") not in tables]
        assert quoted, name
        assert missing == [], f"results/README.md, profile {name}: numbers its tables do not print: {missing}"
        checked += 1
    assert checked >= 3


def test_update_readme_rewrites_only_the_block(tmp_path):
    from suite import report

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.FINDINGS[0]}\n- stale: 7 of 14\n{report.FINDINGS[1]}\n\nrest\n"
                      "<!-- findings of cpu: generated by publish -->\nstale too\n<!-- end of findings -->\n")
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    assert report.update_readme(readme, results)
    text = readme.read_text()
    assert "stale" not in text and text.startswith("# x\n") and "\n\nrest\n" in text
    assert text.count("No published verdicts yet.") == 2
    assert report.findings_blocks(text)[1][0] == "cpu"
