"""accel.search on Optuna: the book's log-uniform ranges, per-trial seeding, narrowing,
pruning through the Trainer's hook, and worker processes sharing a study in SQLite and in a
real PostgreSQL server (a killed worker's trial is failed by its heartbeat and retried)."""

import math
import os
import signal
import threading
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")  # a GPU machine has none: the module is skipped there
from optuna.trial import TrialState  # noqa: E402

import accel  # noqa: E402
from accel import optim, search  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def ask_many(sampler, space, n):
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(search.suggest(trial, space))
        study.tell(trial, 0.0)
    return out


def test_book_space_is_log_uniform_every_decade_equally():
    assert search.BOOK_SPACE["lr"] == optuna.distributions.FloatDistribution(1e-6, 1e-2,
                                                                             log=True)
    assert search.BOOK_SPACE["weight_decay"].low == 1e-8
    assert search.BOOK_SPACE["weight_decay"].high == 1e-4
    pts = ask_many(search.sampler("random", seed=0), search.BOOK_SPACE, 2000)
    lr = np.array([p["lr"] for p in pts])
    assert lr.min() >= 1e-6 and lr.max() <= 1e-2
    counts = np.histogram(np.log10(lr), bins=4, range=(-6, -2))[0]
    assert np.all(np.abs(counts / 2000 - 0.25) < 0.04), counts
    # a plain uniform would put ~99 % of the samples in the top decade
    assert np.mean(lr > 1e-3) == pytest.approx(0.25, abs=0.04)


def test_bad_ranges_are_refused():
    for bad in (lambda: search.log_uniform(0, 1), lambda: search.log_uniform(2, 1),
                lambda: search.uniform(0, float("nan"))):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        search.run_study(lambda p, t: 0.0, {"lr": (1e-6, 1e-2)}, 2)
    with pytest.raises(ValueError, match="storage_url"):
        search.run_study(lambda p, t: 0.0, search.BOOK_SPACE, 2, workers=2)
    with pytest.raises(ValueError, match="narrow_top"):
        search.random_search(lambda p, t: 0.0, 2, rounds=2)
    with pytest.raises(ValueError, match="sampler"):
        search.sampler("grid")
    with pytest.raises(ValueError, match="pruner"):
        search.pruner("percentile")


def test_trial_n_draws_the_same_point_whatever_ran_before():
    """Seeded per trial number: the points do not depend on workers or order."""
    a = ask_many(search.sampler("random", seed=3), search.BOOK_SPACE, 6)
    b = ask_many(search.sampler("random", seed=3), search.BOOK_SPACE, 6)
    c = ask_many(search.sampler("random", seed=4), search.BOOK_SPACE, 6)
    assert a == b and a != c
    assert len({p["lr"] for p in a}) == 6  # not one point drawn six times
    # a second study that starts at trial 3 (trials 0-2 run elsewhere) draws a[3:]
    study = optuna.create_study(sampler=search.sampler("random", seed=3))
    for p in a[:3]:
        study.add_trial(optuna.trial.create_trial(params=p, distributions=search.BOOK_SPACE,
                                                  value=0.0))
    trial = study.ask()
    assert trial.number == 3 and search.suggest(trial, search.BOOK_SPACE) == a[3]
    tpe = ask_many(search.sampler("tpe", seed=3), search.BOOK_SPACE, 3)
    assert tpe == ask_many(search.sampler("tpe", seed=3), search.BOOK_SPACE, 3)


def frozen(points, scores, space=None):
    space = space or {"lr": search.log_uniform(1e-6, 1e-2)}
    return [optuna.trial.create_trial(params={"lr": p}, distributions=space, value=s)
            for p, s in zip(points, scores)]


def test_narrow_spans_the_best_k_exactly():
    space = {"lr": search.log_uniform(1e-6, 1e-2)}
    tr = frozen([1e-5, 1e-3, 3e-3, 1e-6, 2e-4], [0.2, 0.9, 0.8, 0.1, 0.7])
    new = search.narrow(space, tr, top=3)
    assert new["lr"].low == 2e-4 and new["lr"].high == 3e-3 and new["lr"].log
    # a margin widens in the log scale and stays inside the old range
    assert search.narrow(space, tr, top=3, margin=10.0)["lr"] == space["lr"]
    lo = search.narrow(space, tr, top=3, margin=0.5)["lr"]
    width = math.log10(3e-3) - math.log10(2e-4)
    assert math.log10(lo.low) == pytest.approx(math.log10(2e-4) - 0.5 * width)
    # minimizing picks the other end; pruned and failed trials never set the range
    assert search.narrow(space, tr, top=2, maximize=False)["lr"].high == 1e-5
    pruned = optuna.trial.create_trial(params={"lr": 1e-2}, distributions=space,
                                       state=TrialState.PRUNED, intermediate_values={1: 1.0})
    assert search.narrow(space, [*tr, pruned], top=1)["lr"].high == 1e-3
    with pytest.raises(ValueError):
        search.narrow(space, tr, top=0)
    with pytest.raises(ValueError):
        search.narrow(space, [pruned], top=1)


def toy(params, trial):
    """Best at lr = 1e-3: the score falls with the distance in decades."""
    return -abs(math.log10(params["lr"]) + 3), {"decades": math.log10(params["lr"])}


def test_second_round_searches_the_range_of_the_best_k():
    res = search.random_search(toy, 30, seed=0, narrow_top=5)
    assert [len(res.round(r)) for r in (0, 1)] == [30, 30]
    best5 = search.rank(res.round(0))[:5]
    for k in ("lr", "weight_decay"):
        vals = [t.params[k] for t in best5]
        assert res.spaces[1][k].low == min(vals) and res.spaces[1][k].high == max(vals)
        assert all(min(vals) <= t.params[k] <= max(vals) for t in res.round(1))
    w = [math.log10(s["lr"].high / s["lr"].low) for s in res.spaces]
    assert w[0] == pytest.approx(4.0) and w[1] < 1.5
    assert abs(math.log10(res.best.params["lr"]) + 3) < 0.1
    assert res.best.user_attrs["decades"] == pytest.approx(math.log10(res.best.params["lr"]))
    scores = [t.value for t in res.ranked()[:30]]
    assert scores == sorted(scores, reverse=True)
    assert res.spaces_dict()[0]["lr"] == {"kind": "log_uniform", "low": 1e-6, "high": 1e-2,
                                          "log": True}


# -- pruning through Trainer.on_evaluate


def tiny_data(n=120, seed=0):
    (x, t), _ = accel.datasets.load("spiral", seed=seed)
    x, t = x[:n], t[:n]
    return (x[: n * 3 // 4], t[: n * 3 // 4]), (x[n * 3 // 4:], t[n * 3 // 4:])


DATA = tiny_data()
EPOCHS = 8


def train(params, trial, epochs=EPOCHS, hook=True):
    (x, t), val = DATA
    net = accel.MultiLayerNet(2, [16], 3, backend="numpy", seed=0)
    h = accel.Trainer(net, optim.SGD(params["lr"]), x, t, validation_data=val, epochs=epochs,
                      batch_size=30, seed=0, verbose=False,
                      on_evaluate=search.pruning_hook(trial) if hook else None).fit()
    return h.val_acc[-1], {"val_acc": h.val_acc, "epochs": epochs}


def test_a_hopeless_trial_is_pruned_after_fewer_epochs():
    study = optuna.create_study(direction="maximize",
                                pruner=search.pruner("median", startup_trials=2,
                                                     warmup_epochs=2))
    # two good trials set the median, then one whose lr cannot move the weights
    for lr in (0.5, 0.5, 1e-9):
        study.enqueue_trial({"lr": lr})
    space = {"lr": search.log_uniform(1e-10, 1.0)}
    study.optimize(lambda tr: train(search.suggest(tr, space), tr)[0], n_trials=3)
    good, _, bad = study.trials
    assert good.state == TrialState.COMPLETE and search.epochs_run(good) == EPOCHS
    assert sorted(good.intermediate_values) == list(range(1, EPOCHS + 1))  # epoch 0 unreported
    assert bad.state == TrialState.PRUNED
    assert search.epochs_run(bad) == 2 < EPOCHS  # never before epoch 2 (warm-up), then at once
    assert len(bad.user_attrs["val_acc"]) == 3  # epochs 0..2 kept for the plot
    assert bad.intermediate_values[2] < good.intermediate_values[2]


def test_the_hook_raises_through_fit():
    study = optuna.create_study(direction="maximize",
                                pruner=search.pruner("median", startup_trials=0,
                                                     warmup_epochs=0))
    study.add_trial(optuna.trial.create_trial(
        params={}, distributions={}, value=1.0,
        intermediate_values={e: 1.0 for e in range(1, EPOCHS + 1)}))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        train({"lr": 1e-9}, trial)


# -- worker processes sharing a study through its storage

T = 8


def slow_trial(params, trial):
    """A real (tiny) training run, slowed so that both workers get trials."""
    time.sleep(0.3)
    return train(params, trial, epochs=2, hook=False)


def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def check_exact(study, n):
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == n
    assert len({t.number for t in trials}) == len(trials)
    return done


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_two_workers_finish_exactly_t_trials(where, tmp_path, request):
    url = sqlite_url(tmp_path) if where == "sqlite" else request.getfixturevalue("postgres_url")
    name = f"two-workers-{where}"
    study = search.run_study(slow_trial, search.BOOK_SPACE, T, study_name=name,
                             storage_url=url, seed=0, workers=2, heartbeat_interval=1)
    done = check_exact(study, T)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials
    assert all(t.state != TrialState.FAIL or t.user_attrs.get("surplus")
               for t in study.trials)
    # the same points one process draws alone (each trial number has its own stream)
    alone = search.run_study(slow_trial, search.BOOK_SPACE, T, seed=0)
    by_number = {t.number: t.params for t in alone.trials}
    assert all(t.params == by_number[t.number] for t in done if t.number < T)
    # running it again continues the study: nothing more to do
    again = search.run_study(slow_trial, search.BOOK_SPACE, T, study_name=name,
                             storage_url=url, seed=0)
    assert len(again.trials) == len(study.trials)
    # and 2 more trials is 2 more
    more = search.run_study(slow_trial, search.BOOK_SPACE, T + 2, study_name=name,
                            storage_url=url, seed=0)
    check_exact(more, T + 2)


def test_a_study_with_other_settings_is_refused(tmp_path):
    url = sqlite_url(tmp_path)
    search.run_study(toy, search.BOOK_SPACE, 2, study_name="s", storage_url=url,
                     attrs={"setting": {"epochs": 50}})
    with pytest.raises(ValueError, match="setting"):
        search.run_study(toy, search.BOOK_SPACE, 2, study_name="s", storage_url=url,
                         attrs={"setting": {"epochs": 4}})
    with pytest.raises(ValueError, match="space"):
        search.run_study(toy, {"lr": search.log_uniform(1e-3, 1e-2)}, 2, study_name="s",
                         storage_url=url)


def kill_one_worker_mid_trial(url, name, out):
    """Wait for a running trial, SIGKILL the worker process running it; record its number."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=url)
        except KeyError:
            time.sleep(0.1)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if worker and t.number >= 1 and t.params:  # mid-trial: its point already drawn
                os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
                out["killed"] = t.number
                out["params"] = t.params
                return
        time.sleep(0.05)


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_killed_worker_loses_nothing(where, tmp_path, request):
    url = sqlite_url(tmp_path) if where == "sqlite" else request.getfixturevalue("postgres_url")
    name = f"killed-{where}"
    search.run_study(toy, search.BOOK_SPACE, 1, study_name=name, storage_url=url,
                     seed=0)  # create
    seen = {}
    killer = threading.Thread(target=kill_one_worker_mid_trial, args=(url, name, seen))
    killer.start()
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match="exited with status \\[-9\\]"):
        study = search.run_study(slow_trial, search.BOOK_SPACE, T, study_name=name,
                                 storage_url=url, seed=0, workers=2, heartbeat_interval=1,
                                 grace_period=2, poll=0.2)
    killer.join()
    assert "killed" in seen and time.monotonic() - t0 < 60
    done = check_exact(study, T)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [seen["killed"]]
    # its parameters came back as a new trial, which completed
    retried = [t for t in done if t.system_attrs.get("failed_trial") == seen["killed"]]
    assert len(retried) == 1 and retried[0].params == seen["params"]
    assert retried[0].number > seen["killed"]


def test_search_settings_are_checked_before_any_trial_runs():
    ran = []

    def objective(params, trial):
        ran.append(params)
        return 0.5

    for kwargs, error in (({"narrow_top": 0}, ValueError), ({"narrow_top": 3}, ValueError),
                          ({"narrow_top": 1.5}, TypeError), ({"rounds": 0}, ValueError),
                          ({"narrow_top": True}, TypeError)):
        with pytest.raises(error, match="narrow_top|rounds"):
            search.random_search(objective, 2, **kwargs)
    with pytest.raises(ValueError, match="workers"):
        search.run_study(objective, search.BOOK_SPACE, 2, workers=0)
    assert ran == []


def test_each_trial_trains_from_its_own_seed():
    seeds = [search.trial_seed(0, n, "training") for n in range(200)]
    assert len(set(seeds)) == 200  # no two trials start from the same weights
    assert seeds[7] == search.trial_seed(0, 7, "training")  # any worker derives the same
    assert search.trial_seed(0, 7, "sampler") != seeds[7]  # the draw has a stream of its own
    assert search.trial_seed(1, 7, "training") != seeds[7]
    assert search.trial_seed(None, 7, "training") is None
