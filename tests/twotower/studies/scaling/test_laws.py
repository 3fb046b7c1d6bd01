import numpy as np
import pytest

from tests.twotower.studies.scaling.conftest import fake_result
from twotower.studies.scaling.laws import LAWS, checkpoints, fit_laws, law_points, on_axis
from core.strict import to_dict
from twotower.studies.scaling.grid import ModelShape, SweepPoint

BASE = to_dict(SweepPoint(ModelShape(1, 16), None, 10, 128))


def _grid_results():
    """4 model sizes and 4 data sizes around the base, plus an off-axis point (batch 32)."""
    results = [fake_result(1, w, params=p, key=f"m{w}", loss=lambda c, p=p: 1.0 + 50.0 * p ** -0.5 + 0 * c)
               for w, p in ((8, 1_000), (16, 4_000), (32, 16_000), (64, 64_000))]
    results += [fake_result(1, 16, interactions=d, train_interactions=d, params=4_000, key=f"d{d}",
                            loss=lambda c, d=d: 1.0 + 30.0 * d ** -0.4 + 0 * c)
                for d in (500, 1000, 2000)]
    results.append(fake_result(1, 64, batch_size=32, params=64_000, key="off-axis", loss=lambda c: 0.5))
    return results


def test_checkpoints_skip_missing_and_non_positive_losses():
    r = fake_result(epochs=3)
    r["curve"][1]["loss_valid"] = None
    r["curve"][2]["loss_valid"] = 0.0
    cps = checkpoints([r], "valid")
    assert [c["epoch"] for c in cps] == [1]
    assert len(checkpoints([r], "train")) == 3


def test_compute_law_uses_the_frontier_of_every_checkpoint():
    rng = np.random.default_rng(0)
    results = [fake_result(1, 8 * (i + 1), key=f"p{i}", flops_per_epoch=float(rng.uniform(1e9, 1e10)),
                           loss=lambda c, s=rng.uniform(0.5, 2.0): s * (c / 1e9) ** -0.2) for i in range(6)]
    x, y, labels = law_points(results, "compute", "valid")
    cps = checkpoints(results, "valid")
    expected = [(c["C"], c["L"]) for c in cps if all(o["L"] > c["L"] for o in cps if o["C"] <= c["C"] and o is not c)]
    assert sorted(zip(x.tolist(), y.tolist())) == sorted(expected)
    assert list(x) == sorted(x) and all(np.diff(y) < 0)                 # frontier: more compute, less loss
    assert len(labels) == len(x) and all("@" in label for label in labels)


def test_params_and_data_laws_stay_on_their_axis_and_take_the_best_epoch():
    results = _grid_results()
    x, y, labels = law_points(results, "params", "valid", BASE)
    assert x.tolist() == [1_000, 4_000, 16_000, 64_000]                  # the batch-32 point is off the axis
    assert y.tolist() == pytest.approx([1.0 + 50.0 * p ** -0.5 for p in x])
    assert labels[-1].startswith("m64@")
    x, y, _ = law_points(results, "data", "valid", BASE)
    assert x.tolist() == [500, 1000, 2000]                                # the base point has D=1000 too
    # without a base every point counts: the off-axis point's 0.5 is the best at N = 64,000
    x, y, _ = law_points(results, "params", "valid", None)
    assert y[-1] == 0.5


def test_on_axis_compares_every_other_axis():
    point = dict(BASE, batch_size=32)
    assert on_axis(point, BASE, "batch_size") and not on_axis(point, BASE, "model") and on_axis(point, None, "model")


def test_fit_laws_recovers_the_planted_exponent_of_each_axis():
    fits = fit_laws(_grid_results(), "valid", bootstrap=0, base=BASE)
    assert set(fits) == set(LAWS)
    assert fits["params"]["fit"]["b"] == pytest.approx(0.5, rel=1e-3)
    assert fits["params"]["fit"]["c"] == pytest.approx(1.0, rel=1e-3)
    assert fits["data"]["fit"] is None and "needs at least 4 points; got 3" in fits["data"]["error"]


def test_missing_validation_loss_says_what_to_do():
    fits = fit_laws([fake_result(valid=False)], "valid", bootstrap=0)
    assert "set fit.loss: train" in fits["compute"]["error"]
    with pytest.raises(ValueError, match="unknown law"):
        law_points([], "batch")
