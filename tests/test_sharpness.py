"""suite/sharpness.py: on a quadratic with a known Hessian and on a small network against its dense
Hessian, deterministic for a seed, and leaving the model exactly as it found it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian
from torch.nn import functional as F

from suite import sharpness

EIGENVALUES = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1, -0.2], dtype=torch.float64)


class Quadratic(nn.Module):
    """L(w) = 1/2 w'Aw through the criterion (the model's output is w itself): its Hessian is A."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        self.register_buffer("a", q @ torch.diag(EIGENVALUES) @ q.T)
        self.w = nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w

    def criterion(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * out @ self.a @ out


QUADRATIC_BATCHES = [(torch.zeros(1), torch.zeros(1))]


def test_power_iteration_recovers_the_largest_eigenvalue_of_a_quadratic():
    model = Quadratic()
    est = sharpness.top_eigenvalue(model, QUADRATIC_BATCHES, torch.Generator().manual_seed(1),
                                   criterion=model.criterion)
    assert est.converged and est.iterations < sharpness.ITERATIONS
    # the stopping rule: the Rayleigh quotient moved by < 1e-3 relatively; the eigenvalue is that close
    assert est.value == pytest.approx(5.0, rel=5 * sharpness.TOLERANCE)


def test_hutchinson_recovers_the_trace_of_a_quadratic():
    model = Quadratic()
    exact = float(EIGENVALUES.sum())
    # v'Av over Rademacher v: mean tr(A), variance 2 * sum_{i != j} A_ij^2; 2,000 samples, all of them
    est = sharpness.hessian_trace(model, QUADRATIC_BATCHES, torch.Generator().manual_seed(1), iterations=2000,
                                  tolerance=0.0, criterion=model.criterion)
    off = model.a - torch.diag(torch.diag(model.a))
    sd = math.sqrt(2 * float((off**2).sum()) / 2000)
    assert not est.converged and est.iterations == 2000
    assert abs(est.value - exact) < 4 * sd
    # with a diagonal Hessian every Rademacher sample is the trace exactly: the second one stops it
    model.a.copy_(torch.diag(EIGENVALUES))
    est = sharpness.hessian_trace(model, QUADRATIC_BATCHES, torch.Generator().manual_seed(1),
                                  criterion=model.criterion)
    assert est.converged and est.iterations == 2 and est.value == pytest.approx(exact, rel=1e-12)


def test_one_ascent_step_of_m_sharpness_is_sams_on_a_quadratic():
    model = Quadratic()
    w, a = model.w.detach().clone(), model.a
    g = a @ w
    rho = 0.1
    e = rho * g / g.norm()
    expected = float(0.5 * (w + e) @ a @ (w + e) - 0.5 * w @ a @ w)
    got = sharpness.m_sharpness(model, QUADRATIC_BATCHES, rho, steps=1, criterion=model.criterion)
    assert got == pytest.approx(expected, rel=1e-10)
    more = sharpness.m_sharpness(model, QUADRATIC_BATCHES, rho, steps=5, criterion=model.criterion)
    assert more >= got - 1e-12  # more steps find at least the first step's rise (the max is kept)
    assert sharpness.m_sharpness(model, QUADRATIC_BATCHES, 0.0, criterion=model.criterion) == 0.0
    with pytest.raises(ValueError, match="rho >= 0 and steps >= 1"):
        sharpness.m_sharpness(model, QUADRATIC_BATCHES, -1.0, criterion=model.criterion)


def test_adaptive_m_sharpness_stays_in_the_weight_scaled_ball():
    """ASAM's ball ||e / |w| || <= rho: a weight of zero is never moved, so on a loss that depends on that
    weight alone the adaptive rise is zero where the plain one is not."""
    model = Quadratic()
    with torch.no_grad():
        model.w.copy_(torch.tensor([0.0, 1, 1, 1, 1, 1], dtype=torch.float64))
        model.a.copy_(torch.diag(torch.tensor([4.0, 0, 0, 0, 0, 0], dtype=torch.float64)))
    plain = sharpness.m_sharpness(model, QUADRATIC_BATCHES, 0.1, steps=1, criterion=model.criterion)
    assert plain == 0.0  # the gradient at w is zero along w_0 (A w = 0), so SAM's step cannot rise either
    with torch.no_grad():
        model.w[0] = 1e-9
    adaptive = sharpness.m_sharpness(model, QUADRATIC_BATCHES, 0.1, steps=3, adaptive=True,
                                     criterion=model.criterion)
    plain = sharpness.m_sharpness(model, QUADRATIC_BATCHES, 0.1, steps=3, criterion=model.criterion)
    assert plain == pytest.approx(0.5 * 4 * 0.1**2, rel=1e-3) and adaptive < 1e-15


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
               for _ in range(2)]
    batches.append((torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g)))
    model.train()
    for x, _ in batches:  # running statistics that differ from any batch's own
        model(x * 2 + 1)
    return model, batches


def _dense_hessian(model: nn.Module, batches) -> torch.Tensor:
    """An independent computation: torch.func.hessian of the whole-set mean loss, in eval mode."""
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]
    total = sum(len(y) for _, y in batches)
    model.eval()

    def mean_loss(theta: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = theta[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        return sum(F.cross_entropy(functional_call(model, parts, (x,)), y, reduction="sum") for x, y in batches) / total

    h = hessian(mean_loss)(flat)
    model.train()
    return h


def test_eigenvalue_and_trace_of_a_small_network_agree_with_its_dense_hessian():
    model, batches = _tiny()
    dense = _dense_hessian(model, batches)
    eig = torch.linalg.eigvalsh(dense)
    largest = eig[eig.abs().argmax()].item()
    est = sharpness.top_eigenvalue(model, batches, torch.Generator().manual_seed(0), iterations=1000, tolerance=1e-9)
    assert est.converged and est.value == pytest.approx(largest, rel=1e-6)
    trace = sharpness.hessian_trace(model, batches, torch.Generator().manual_seed(0), iterations=1000, tolerance=0.0)
    off = dense - torch.diag(torch.diag(dense))
    sd = math.sqrt(2 * float((off**2).sum()) / 1000)
    assert abs(trace.value - float(torch.trace(dense))) < 4 * sd


def test_hvp_is_the_dense_hessian_times_the_vector():
    model, batches = _tiny()
    dense = _dense_hessian(model, batches)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    model.eval()
    hv = torch.cat([h.reshape(-1) for h in sharpness.hvp(model, params, batches, v)])
    assert torch.allclose(hv, dense @ torch.cat([x.reshape(-1) for x in v]), atol=1e-10)


def test_every_measure_is_deterministic_for_a_seed_and_leaves_the_model_as_it_found_it():
    model, batches = _tiny()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[3].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]

    def everything(seed: int):
        g = torch.Generator().manual_seed(seed)
        d = [sharpness.filter_normalised_direction(model, g) for _ in range(2)]
        return (sharpness.top_eigenvalue(model, batches, g, iterations=5),
                sharpness.hessian_trace(model, batches, g, iterations=5),
                sharpness.m_sharpness(model, batches, 0.05), sharpness.m_sharpness(model, batches, 0.05, adaptive=True),
                sharpness.surface(model, batches, d[:1], [-0.5, 0.0, 0.5]).tolist(),
                sharpness.surface(model, batches, d, [-0.5, 0.0, 0.5]).tolist())

    first = everything(7)
    assert everything(7) == first
    assert everything(8)[0] != first[0]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[0].bias.grad is None
    assert not model[3].bias.requires_grad and model[3].weight.requires_grad


def test_filter_normalised_directions_and_the_surfaces_they_give():
    model, batches = _tiny()
    d = sharpness.filter_normalised_direction(model, torch.Generator().manual_seed(0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p, di in zip(trainable, d, strict=True):
        if p.dim() == 1:
            assert not di.any()  # biases and BatchNorm stay put
        else:  # each filter as long as the weights' filter
            assert torch.allclose(di.norm(dim=1), p.detach().norm(dim=1))
    line = sharpness.surface(model, batches, [d], [-1.0, 0.0, 1.0])
    model.eval()
    assert line.shape == (3,) and line[1].item() == pytest.approx(sharpness.loss(model, batches), rel=1e-12)
    model.train()
    plane = sharpness.surface(model, batches, [d, d], [-1.0, 0.0, 1.0])
    assert plane.shape == (3, 3) and plane[1, 1] == line[1]
    assert plane[0, 2].item() == pytest.approx(line[1].item(), rel=1e-12)  # -d + d: back at w
    assert plane[2, 2].item() != pytest.approx(line[2].item())  # 2d is not d
    with pytest.raises(ValueError, match="one or two directions"):
        sharpness.surface(model, batches, [d, d, d], [0.0])


# ----- python -m suite sharpness: each recorded run's final model, measured into its record ---------------------
def _sweep(tmp_path):
    import json

    from suite.cli import main

    profile = tmp_path / "tiny.toml"
    profile.write_text('seeds = 1\noptimizers = ["sgd", "sam"]\n[train]\ndataset = "synthetic"\nmodel = "resnet8"\n'
                       'epochs = 1\nbatch_size = 32\ntrain_subset = 96\ntest_subset = 50\n'
                       '[hparams.sam]\nrho = 0.07\n')
    results = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--results-dir", str(results), "--no-progress",
                 "--no-report"]) == 0
    paths = sorted((results / "runs" / "tiny").glob("*.json"))

    def records():
        return [json.loads(p.read_text()) for p in paths]

    return results, paths, records


def test_the_command_measures_every_run_into_its_record_once_and_the_same_again(tmp_path, capsys):
    from suite.cli import main

    results, paths, records = _sweep(tmp_path)
    args = ["sharpness", "--results-dir", str(results), "--examples", "16", "--iterations", "5", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 runs, 0 already measured, 2 to measure" in err and "at rho 0.07" in err
    first = records()
    for r in first:
        assert all(math.isfinite(r["metrics"][k]) for k in sharpness.METRIC_KEYS)
        assert r["metrics"]["sharpness_trace"] != 0 and r["metrics"]["sharpness_m"] >= 0
        s = r["sharpness"]
        assert s["rho"] == 0.07 and s["settings"]["examples"] == 16  # every optimizer on SAM's ball
        assert s["settings"]["iterations"] == 5 and s["lambda_max_iterations"] <= 5
        assert len(s["surface_1d"]["loss"]) == 21 and len(s["surface_2d"]["loss"]) == 11
        assert s["surface_1d"]["loss"][10] == pytest.approx(s["surface_2d"]["loss"][5][5], rel=1e-6)  # both at w
    assert (results / "summary.csv").read_text().count("sharpness_lambda_max_mean") == 1
    summary = (results / "summary.md").read_text()
    section = summary.split("## Sharpness of the final models")[1]  # a table of its own, after the main ones
    sam_row = next(line for line in section.splitlines() if line.startswith("| sam "))
    lam = first[[r["optimizer"]["name"] for r in first].index("sam")]["metrics"]["sharpness_lambda_max"]
    assert f"{lam:.4g} ± –" in sam_row  # one seed: no interval
    assert main(args) == 0
    assert "2 already measured, 0 to measure" in capsys.readouterr().err
    assert main([*args, "--force", "--optimizer", "sa*"]) == 0  # globs; measured again: the same figures
    again = records()
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    assert [r["sharpness"]["surface_2d"] for r in again] == [r["sharpness"]["surface_2d"] for r in first]


def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys):
    from suite import store
    from suite.cli import main

    results, paths, records = _sweep(tmp_path)
    before = [p.read_text() for p in paths]
    capsys.readouterr()
    for extra, message in ((["--examples", "0"], "sharpness examples must be an integer >= 1, got 0"),
                           (["--rho", "-1"], "--rho must be a finite number >= 0"),
                           (["--iterations", "0"], "sharpness iterations must be an integer >= 1, got 0"),
                           (["--optimizer", "nope"], "no records of optimizer 'nope'"),
                           (["--profile", "other"], "no records in")):
        assert main(["sharpness", "--results-dir", str(results), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
    for p in paths:
        store.weights_path(results, "tiny", p.stem).unlink()
    assert main(["sharpness", "--results-dir", str(results), "--no-progress"]) == 2
    assert "no final weights for 2 runs" in capsys.readouterr().err
    assert [p.read_text() for p in paths] == before


# ----- a profile's [sharpness] table: its settings, and at_end (run --sharpness) measures as each run ends ---------
TINY = ('seeds = 2\noptimizers = ["sgd", "sam"]\n[train]\ndataset = "synthetic"\nmodel = "resnet8"\n'
        'epochs = 1\nbatch_size = 32\ntrain_subset = 96\ntest_subset = 50\n[hparams.sam]\nrho = 0.07\n')
MEASURED = ('[sharpness]\nat_end = true\nexamples = 16\niterations = 4\nsurface_points = 5\n'
            'surface_2d_points = 3\nrho = 0.02\n')


def test_a_profile_measures_each_run_as_it_ends_with_its_own_settings(tmp_path, capsys):
    import json

    from suite.cli import main

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY + MEASURED)
    results = tmp_path / "out"
    assert main(["run", "--profile", str(profile), "--results-dir", str(results), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("lambda_max") == 4 and "at rho 0.02" in err  # one line a run, the profile's rho
    paths = sorted((results / "runs" / "tiny").glob("*.json"))
    at_end = [json.loads(p.read_text()) for p in paths]
    for r in at_end:
        s = r["sharpness"]
        assert s["settings"]["examples"] == 16 and s["settings"]["iterations"] == 4 and s["rho"] == 0.02
        assert len(s["surface_1d"]["loss"]) == 5 and len(s["surface_2d"]["loss"]) == 3
        assert "git_commit" in s and s["seconds"] > 0
    # the report: values beside test accuracy, paired differences, what measuring cost, and the figures
    summary = (results / "summary.md").read_text().split("## Sharpness of the final models")[1]
    assert "Measuring the 4 runs of `tiny` took" in summary and "min the runs themselves took" in summary
    assert "Seed-paired differences" in summary and "λmax Δ SGD" in summary
    for figure in ("tiny-sharpness.png", "tiny-surfaces.png", "tiny-surfaces-2d.png"):
        assert (results / figure).stat().st_size > 0
    # the command, handed the profile's file, measures with the same settings: the same figures exactly
    assert main(["sharpness", "--results-dir", str(results), "--profile", str(profile), "--force",
                 "--no-progress", "--no-report"]) == 0
    again = [json.loads(p.read_text()) for p in paths]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in at_end]
    assert [r["sharpness"]["surface_2d"] for r in again] == [r["sharpness"]["surface_2d"] for r in at_end]
    # --no-sharpness overrides the profile: nothing measured, no sharpness section, no sharpness figures
    other = tmp_path / "plain"
    assert main(["run", "--profile", str(profile), "--results-dir", str(other), "--no-progress",
                 "--no-sharpness"]) == 0
    plain = [json.loads(p.read_text()) for p in sorted((other / "runs" / "tiny").glob("*.json"))]
    assert all("sharpness" not in r and sharpness.METRIC_KEYS[0] not in r["metrics"] for r in plain)
    assert "Sharpness" not in (other / "summary.md").read_text()
    assert not list(other.glob("*sharpness*.png")) and not list(other.glob("*surfaces*.png"))


@pytest.mark.parametrize("table, message", [
    ("[sharpness]\nexamples = 0\n", "sharpness examples must be an integer >= 1, got 0"),
    ("[sharpness]\ntolerance = -1\n", "sharpness tolerance must be"),
    ("[sharpness]\nat_end = \"yes\"\n", "[sharpness] at_end must be true or false"),
    ("[sharpness]\nrho = -0.1\n", "[sharpness] rho must be"),
    ("[sharpness]\nexampels = 64\n", "unknown key 'exampels' in [sharpness]"),
])
def test_a_bad_sharpness_table_is_one_line_before_anything_runs(tmp_path, capsys, table, message):
    from helpers import refused_in_one_line

    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY + table)
    for command in (["run", "--profile", str(profile)], ["sharpness", "--profile", str(profile)]):
        refused_in_one_line(capsys, [*command, "--no-progress"], message, tmp_path / "out")


def test_every_shipped_profile_says_how_its_runs_are_measured():
    from suite.config import available_profiles, load_profile
    from suite.sharpness import settings_for

    for name in available_profiles():
        settings, rho = settings_for(load_profile(name))
        assert settings.examples >= 1 and rho >= 0
    cpu, _ = settings_for(load_profile("cpu"))
    assert cpu.examples == 128 == cpu.batch_size  # one batch: what docs/sharpness.md costs
    assert settings_for(load_profile("cpu-noise"))[1] == 0.1  # its SAM rho


def test_the_smoke_profile_measures_a_run_in_a_few_passes():
    """`python -m suite sharpness` on smoke runs takes seconds: its [sharpness] table looks at few examples
    with few iterations and surface points. Counted in examples through the model (smoke's ResNet-8), not
    timed: 384 (16 examples; three iterations, ascent steps, surface points), where the cpu profile's
    settings send about 90 times as many."""
    from suite.config import load_profile
    from suite.models import build_model

    settings = load_profile("smoke").sharpness
    model = build_model("resnet8", 10)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    g = torch.Generator().manual_seed(0)
    n = settings.examples
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    metrics, details = sharpness.measure_model(model, x, y, 0.05, settings, run_seed=0)
    assert all(math.isfinite(metrics[k]) for k in sharpness.METRIC_KEYS)
    assert sum(seen) <= 500, sum(seen)
