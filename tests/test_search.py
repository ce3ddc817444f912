"""accel.search: log-uniform sampling, range narrowing, ranking, reproducibility."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from accel import search


def test_log_uniform_covers_every_decade_equally():
    d = search.LogUniform.exponents(-6, -2)
    assert d == search.LogUniform(1e-6, 1e-2)
    v = d.sample(np.random.default_rng(0), size=20000)
    assert v.min() >= 1e-6 and v.max() <= 1e-2
    counts = np.histogram(np.log10(v), bins=4, range=(-6, -2))[0]
    assert np.all(np.abs(counts / 20000 - 0.25) < 0.02)
    # a plain uniform would put ~99 % of the samples in the top decade
    assert np.mean(v > 1e-3) == pytest.approx(0.25, abs=0.02)


def test_uniform_and_choice():
    rng = np.random.default_rng(1)
    u = search.Uniform(-1, 3).sample(rng, size=5000)
    assert u.min() >= -1 and u.max() <= 3 and abs(u.mean() - 1) < 0.1
    c = search.Choice(["relu", "tanh"])
    assert {c.sample(rng) for _ in range(50)} == {"relu", "tanh"}
    assert c.narrowed(["tanh"]) == search.Choice(["tanh"])


@pytest.mark.parametrize("bad", [lambda: search.LogUniform(0, 1), lambda: search.LogUniform(2, 1),
                                 lambda: search.Uniform(0, float("nan")),
                                 lambda: search.Choice([])])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_sample_is_seeded():
    space = {"lr": search.LogUniform(1e-6, 1e-2), "wd": search.LogUniform(1e-8, 1e-4)}
    a = search.sample(space, np.random.default_rng(3))
    b = search.sample(space, np.random.default_rng(3))
    assert a == b and set(a) == {"lr", "wd"}
    assert all(isinstance(v, float) for v in a.values())


def trials(points, scores):
    return [search.Trial({"lr": p}, s, 0, i) for i, (p, s) in enumerate(zip(points, scores))]


def test_narrow_spans_the_best_in_log_scale():
    space = {"lr": search.LogUniform(1e-6, 1e-2)}
    tr = trials([1e-5, 1e-3, 3e-3, 1e-6, 2e-4], [0.2, 0.9, 0.8, 0.1, 0.7])
    new = search.narrow(space, tr, top=3)
    assert new["lr"].low == pytest.approx(2e-4) and new["lr"].high == pytest.approx(3e-3)
    # a margin widens in the log scale and stays inside the old range
    wide = search.narrow(space, tr, top=3, margin=10.0)
    assert wide["lr"] == search.LogUniform(1e-6, 1e-2)
    lo = search.narrow(space, tr, top=3, margin=0.5)["lr"]
    width = math.log10(3e-3) - math.log10(2e-4)
    assert math.log10(lo.low) == pytest.approx(math.log10(2e-4) - 0.5 * width)
    # minimizing picks the other end
    assert search.narrow(space, tr, top=2, maximize=False)["lr"].high == pytest.approx(1e-5)


def test_narrow_ignores_nan_and_checks_top():
    space = {"lr": search.LogUniform(1e-6, 1e-2)}
    tr = trials([1e-5, 1e-3], [float("nan"), 0.5])
    assert search.narrow(space, tr, top=2)["lr"] == search.LogUniform(1e-3, 1e-3)
    with pytest.raises(ValueError):
        search.narrow(space, tr, top=0)
    with pytest.raises(ValueError):
        search.narrow(space, trials([1e-5], [float("nan")]), top=1)


def objective(p):
    """Best at lr = 1e-3: score falls with the distance in decades."""
    return -abs(math.log10(p["lr"]) + 3), {"decades": math.log10(p["lr"])}


def test_random_search_ranks_and_narrows_toward_the_optimum():
    space = {"lr": search.LogUniform(1e-6, 1e-2)}
    seen = []
    res = search.random_search(objective, space, n_trials=30, seed=0, rounds=3, narrow_top=5,
                               callback=seen.append)
    assert len(res.trials) == 90 and len(seen) == 90 and len(res.spaces) == 3
    ranked = res.ranked()
    assert [t.score for t in ranked] == sorted((t.score for t in res.trials), reverse=True)
    assert res.best is ranked[0] and abs(math.log10(res.best.params["lr"]) + 3) < 0.05
    w = [math.log10(s["lr"].high / s["lr"].low) for s in res.spaces]
    assert w[0] > w[1] > w[2]
    for r, s in enumerate(res.spaces):
        assert all(t.params["lr"] in s["lr"] for t in res.round(r))
    assert res.best.info["decades"] == pytest.approx(math.log10(res.best.params["lr"]))
    d = res.to_dict()
    assert d["ranking"][0] == res.best.index and len(d["trials"]) == 90


def test_random_search_is_reproducible_with_any_map():
    space = {"lr": search.LogUniform(1e-6, 1e-2)}
    a = search.random_search(objective, space, 12, seed=7)
    with ThreadPoolExecutor(3) as pool:
        b = search.random_search(objective, space, 12, seed=7, map=pool.map)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.score for t in a.trials] == [t.score for t in b.trials]


def test_random_search_arguments():
    space = {"lr": search.LogUniform(1e-6, 1e-2)}
    with pytest.raises(ValueError, match="narrow_top"):
        search.random_search(objective, space, 5, rounds=2)
    with pytest.raises(ValueError):
        search.random_search(objective, space, 0)
    with pytest.raises(TypeError):
        search.random_search(objective, {"lr": (1e-6, 1e-2)}, 5)
    res = search.random_search(lambda p: p["lr"], space, 5, seed=0, maximize=False)
    assert res.best.score == min(t.score for t in res.trials)
