"""accel.search's bookkeeping under concurrency and failure: a study's settings are kept and
enforced, each stale trial is retried once, no trial is ever left FAIL by the bookkeeping,
processes started together on a fresh PostgreSQL database all run, an objective that always
fails ends, and a database that goes away gives a message that says what to do."""

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from accel import search  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).parents[1]


def toy(params, trial):
    """Best at lr = 1e-3."""
    return -abs(math.log10(params["lr"]) + 3)


def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def url_for(where, tmp_path, request, name):
    """A SQLite file, or a fresh database on the session's PostgreSQL server."""
    if where == "sqlite":
        return sqlite_url(tmp_path)
    import pg

    return pg.create_database(request.getfixturevalue("postgres_url"), name)


def states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def run_together(*calls):
    """Run the calls in threads started together (two machines joining one study); return
    their results, re-raising the first exception."""
    out, errors = [None] * len(calls), []
    barrier = threading.Barrier(len(calls))

    def go(i, call):
        try:
            barrier.wait()
            out[i] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a call did not end"
    if errors:
        raise errors[0]
    return out


# -- 2: a study's settings are stored with it


def test_a_call_that_disagrees_with_the_study_is_refused_by_name(tmp_path):
    url = sqlite_url(tmp_path)
    kw = {"study_name": "s", "storage_url": url, "seed": 0}
    search.run_study(toy, search.BOOK_SPACE, 5, **kw)
    for change, match in (({"direction": "minimize"}, "is run to maximize, not "
                                                      "direction='minimize'"),
                          ({"seed": 1}, "'seed': 0.*not.*'seed': 1"),
                          ({"sampler_name": "tpe"}, "'sampler': 'random'.*not.*'tpe'"),
                          ({"pruner_name": "median"}, "'pruner': 'none'.*not.*'median'"),
                          ({"pruner_name": "hyperband", "pruner_kwargs": {"epochs": 9}},
                           "hyperband")):
        with pytest.raises(ValueError, match=match):
            search.run_study(toy, search.BOOK_SPACE, 5, **{**kw, **change})
    with pytest.raises(ValueError, match="already has 5 complete or pruned trials, more than "
                                         "n_trials=3: pass n_trials >= 5"):
        search.run_study(toy, search.BOOK_SPACE, 3, **kw)
    with pytest.raises(ValueError, match="direction"):
        search.random_search(toy, 5, maximize=False, study_name="s", storage_url=url, seed=0)
    # the same settings continue it; none of the refused calls ran a trial
    study = search.run_study(toy, search.BOOK_SPACE, 6, **kw)
    assert states(study) == [TrialState.COMPLETE] * 6
    assert study.user_attrs["search_settings"] == {"sampler": "random", "seed": 0,
                                                   "pruner": "none", "pruner_kwargs": {}}


# -- 3 and 10: one lock around the bookkeeping, on every storage


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_each_stale_trial_is_retried_exactly_once(where, tmp_path, request, monkeypatch):
    """Two processes find the same stale trials at once (the window between reading them and
    failing them widened to 0.5 s): on SQLite, which has no row locks, both used to fail and
    re-queue each one, so the same parameters ran twice."""
    url = url_for(where, tmp_path, request, "stale_once")
    kw = {"study_name": "stale", "storage_url": url, "seed": 0, "heartbeat_interval": 1,
          "grace_period": 1, "poll": 0.1}
    search.run_study(toy, search.BOOK_SPACE, 1, **kw)
    # three trials of a worker that died mid-trial: running, their heartbeats stopped
    store = search.storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name="stale", storage=store,
                              sampler=search.sampler("random", 0))
    dead = [study.ask() for _ in range(3)]
    for trial in dead:
        search.suggest(trial, search.BOOK_SPACE)
        store.record_heartbeat(trial._trial_id)
    time.sleep(1.5)
    real = type(store)._get_stale_trial_ids

    def slow_to_fail(self, study_id):
        ids = real(self, study_id)
        if ids:
            time.sleep(0.5)
        return ids

    monkeypatch.setattr(type(store), "_get_stale_trial_ids", slow_to_fail)
    a, b = run_together(lambda: search.run_study(toy, search.BOOK_SPACE, 4, **kw),
                        lambda: search.run_study(toy, search.BOOK_SPACE, 4, **kw))
    trials = b.get_trials(deepcopy=False)
    retries = [t.system_attrs.get("failed_trial") for t in trials
               if "failed_trial" in t.system_attrs]
    assert sorted(retries) == [t.number for t in dead]  # each once
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [t.number for t in dead]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    by_number = {t.number: t.params for t in trials}
    for t in trials:
        if "failed_trial" in t.system_attrs:
            assert t.params == by_number[t.system_attrs["failed_trial"]]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_trial_whose_worker_died_before_starting_it_is_retried(where, tmp_path, request):
    """A worker killed between creating its trial and starting the objective leaves a running
    trial without any heartbeat, which Optuna never finds stale: the study used to wait for
    it forever."""
    url = url_for(where, tmp_path, request, "died_early")
    kw = {"study_name": "early", "storage_url": url, "seed": 0, "heartbeat_interval": 1,
          "grace_period": 1, "poll": 0.1}
    search.run_study(toy, search.BOOK_SPACE, 1, **kw)
    store = search.storage(url, heartbeat_interval=1, grace_period=1)
    dead = optuna.load_study(study_name="early", storage=store).ask()  # and then it died
    out = {}
    th = threading.Thread(target=lambda: out.setdefault(
        "study", search.run_study(toy, search.BOOK_SPACE, 3, **kw)), daemon=True)
    th.start()
    th.join(30)
    assert not th.is_alive(), "the study is still waiting for the dead worker's trial"
    trials = out["study"].get_trials(deepcopy=False)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [dead.number]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_no_trial_is_left_failed_by_the_bookkeeping(where, tmp_path, request, monkeypatch):
    """Two machines count the free places at the same moment (the window between counting
    and starting a trial widened to 0.3 s): both used to start a trial for the last place,
    and one was left FAIL ("_Surplus: the study already has ...")."""
    url = url_for(where, tmp_path, request, "no_surplus")
    real = search._counts

    def slow_count(study):
        out = real(study)
        time.sleep(0.3)
        return out

    monkeypatch.setattr(search, "_counts", slow_count)
    kw = {"study_name": "shared", "storage_url": url, "seed": 0, "poll": 0.1}
    search.run_study(toy, search.BOOK_SPACE, 1, **kw)  # created first, as on two machines
    # three places for two machines that count together: both see the last one free
    a, b = run_together(lambda: search.run_study(toy, search.BOOK_SPACE, 4, **kw),
                        lambda: search.run_study(toy, search.BOOK_SPACE, 4, **kw))
    assert states(a) == [TrialState.COMPLETE] * 4
    workers = {t.user_attrs["worker"] for t in a.get_trials(deepcopy=False)}
    assert len(workers) == 1  # one process here: the threads share its name


# -- 7: an objective that always fails


def test_an_objective_that_always_returns_nan_ends_with_a_clear_error(tmp_path):
    calls = []

    def nan(params, trial):
        calls.append(trial.number)
        if len(calls) > 50:
            raise RuntimeError("the search did not stop")
        return float("nan")

    url = sqlite_url(tmp_path)
    with pytest.raises(search.TrialsFailedError,
                       match=r"'s': 4 trials failed in this run, more than max_failed=3 "
                             r"\(trial 3: the objective returned nan"):
        search.run_study(nan, search.BOOK_SPACE, 10, study_name="s", storage_url=url,
                         max_failed=3)
    assert len(calls) == 4
    # by default, as many failures as trials asked for
    with pytest.raises(search.TrialsFailedError, match="6 trials failed in this run, more "
                                                        "than max_failed=5"):
        search.run_study(nan, search.BOOK_SPACE, 5, study_name="t", storage_url=url)
    # fixed, the same call continues the study: its earlier failures are not held against it
    study = search.run_study(toy, search.BOOK_SPACE, 10, study_name="s", storage_url=url,
                             max_failed=3)
    assert states(study).count(TrialState.COMPLETE) == 10
    assert states(study).count(TrialState.FAIL) == 4


def test_what_an_objective_may_return(tmp_path):
    import numpy as np

    for out in (0.5, np.float32(0.5), np.array(0.5), (0.5, {"curve": [1, 2]}), (0.5, None)):
        study = search.run_study(lambda p, t, out=out: out, search.BOOK_SPACE, 1)
        assert study.trials[0].value == 0.5
    for out in (None, "0.5", True, [0.5], (0.5, 1, 2), (0.5, [1])):
        with pytest.raises(TypeError, match="the objective must return a number or \\(number, "
                                            "info dict\\)|info must be a dict"):
            search.run_study(lambda p, t, out=out: out, search.BOOK_SPACE, 1)


def test_nan_in_worker_processes_ends_with_the_same_error(tmp_path):
    with pytest.raises(search.TrialsFailedError, match="more than max_failed=2"):
        search.run_study(_nan, search.BOOK_SPACE, 4, study_name="w",
                         storage_url=sqlite_url(tmp_path), workers=2, max_failed=2, poll=0.1)


def _nan(params, trial):  # module level: picklable for the worker processes
    return float("nan")


# -- 9: processes started together on a fresh PostgreSQL database

_JOIN = textwrap.dedent("""
    import math, sys, time
    import sqlalchemy
    from accel import search

    def objective(params, trial):
        time.sleep(0.05)
        return -abs(math.log10(params["lr"]) + 3)

    held = []

    def widen(conn, cursor, statement, *args):
        # hold the first CREATE for a while: every process has checked that the tables are
        # missing before any creates them, as in an unlucky real start
        if statement.lstrip().upper().startswith("CREATE") and not held:
            held.append(statement)
            time.sleep(1.0)

    if __name__ == "__main__":
        url, start_at = sys.argv[1], float(sys.argv[2])
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", widen)
        while time.time() < start_at:
            time.sleep(0.001)
        study = search.run_study(objective, search.BOOK_SPACE, 6, study_name="book",
                                 storage_url=url, seed=0, heartbeat_interval=1, poll=0.1)
        print(" ".join(t.state.name for t in study.trials))
""")


def test_two_processes_started_together_on_a_fresh_database(tmp_path, postgres_url):
    import pg

    url = pg.create_database(postgres_url, "fresh_two")
    script = tmp_path / "join.py"
    script.write_text(_JOIN)
    paths = [p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    start = time.time() + 3.0  # after both have imported everything
    procs = [subprocess.Popen([sys.executable, str(script), url, str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="book", storage=search.storage(url))
    assert states(study) == [TrialState.COMPLETE] * 6


# -- 11: the PostgreSQL driver, and a server that goes away


def test_a_missing_driver_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError) as info:
        search.storage("postgresql+psycopg://accel@db.example:5432/search")
    msg = str(info.value)
    assert "install accel's [postgres] extra: pip install -e '.[postgres]'" in msg
    assert "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_plain_postgresql_url_uses_the_extras_driver(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    store = search.storage(plain)
    assert store.engine.dialect.driver == "psycopg"


@pytest.fixture
def cluster():
    import pg

    try:
        c = pg.Cluster()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        c.initdb("-A", "trust")
        c.start("-c listen_addresses=127.0.0.1")
    except pg.Unavailable as exc:
        c.remove()
        pytest.skip(str(exc))
    yield c
    c.remove()


def test_a_server_stopped_mid_study_says_run_it_again(cluster):
    import pg

    url = pg.create_database(cluster.url("postgres"), "search")

    def stops_the_server(params, trial):
        if trial.number == 2:
            cluster.stop()
        return toy(params, trial)

    kw = {"study_name": "s", "storage_url": url, "seed": 0, "heartbeat_interval": 1}
    with pytest.raises(search.StorageUnavailableError,
                       match=r"the study's storage postgresql\+psycopg://postgres@127.0.0.1:"
                             r"\d+/search cannot be used \(.*\): every finished trial is kept "
                             r"there; when it is back, run the same call again"):
        search.run_study(stops_the_server, search.BOOK_SPACE, 5, **kw)
    with pytest.raises(search.StorageUnavailableError, match="cannot be used"):
        search.run_study(toy, search.BOOK_SPACE, 5, **kw)  # still down
    cluster.start("-c listen_addresses=127.0.0.1")
    study = search.run_study(toy, search.BOOK_SPACE, 5, **kw)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 5 and [t.number for t in done[:2]] == [0, 1]


# -- 11: the several-machines recipe of docs/search.md, followed literally


def _documented_recipe():
    """The three bash blocks of the several-machines recipe in docs/search.md: the server's
    setup (as the postgres OS user), each machine's setup, the command each machine runs."""
    text = (ROOT / "docs" / "search.md").read_text()
    section = text[text.index("## Workers and machines"):
                   text.index("## What workers and pruning buy")]
    blocks = [b.split("\n", 1)[1] for b in section.split("```")[1::2]]
    assert len(blocks) == 3
    return [[line for line in b.replace("\\\n", " ").splitlines() if line.strip()]
            for b in blocks]


def _own_address() -> str:
    """This machine's address on its network (as machine B would reach machine A), else
    the loopback address."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                             timeout=10).stdout.split()
    except OSError:
        out = []
    return next((a for a in out if a.count(".") == 3 and not a.startswith("127.")),
                "127.0.0.1")


@pytest.mark.slow
def test_the_documented_postgresql_recipe(tmp_path, data_dir):
    """A fresh server with Debian's authentication defaults (peer on the socket,
    scram-sha-256 over TCP, listening on localhost only), set up by the documented commands
    run as written, then two processes of the documented command started at once (--quick),
    connecting to the machine's network address, not the loopback."""
    import pg

    server, client, command = _documented_recipe()
    try:
        cluster = pg.Cluster()
        cluster.initdb("--auth-local=peer", "--auth-host=scram-sha-256")
        cluster.start()
    except pg.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        ip = _own_address()
        subs = {"192.168.1.0/24": f"{ip}/32", "machine-a:5432": f"{ip}:{cluster.port}"}

        def literal(line):
            for k, v in subs.items():
                line = line.replace(k, v)
            return line

        for line in server:  # as the postgres OS user
            r = cluster.run("bash", "-c", literal(line), env=cluster.env)
            assert r.returncode == 0, (line, r.stderr)
        # "pg_ctl restart -D <its data folder>" (its log to a file: not to our pipe)
        r = cluster.run(cluster.bin["pg_ctl"], "restart", "-D", str(cluster.data), "-w",
                        "-l", str(cluster.tmp / "log"))
        assert r.returncode == 0, r.stderr
        home = tmp_path / "home"
        home.mkdir()
        env = dict(os.environ, HOME=str(home), ACCEL_DATA_DIR=str(data_dir))
        for line in client:
            if line.startswith("pip install"):
                continue  # this environment has the extra already
            r = subprocess.run(["bash", "-c", literal(line)], env=env, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, (line, r.stderr)
        (line,) = command
        argv = literal(line).split()
        assert argv[0] == "python"
        procs = [subprocess.Popen([sys.executable, *argv[1:], "--quick", "--backend", "numpy",
                                   "--out", str(tmp_path / f"out{i}")], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        for p, out in zip(procs, outs):
            assert p.returncode == 0, out[-3000:]
        url = cluster.url("search", "accel", "choose-a-password").replace("127.0.0.1", ip)
        study = optuna.load_study(study_name="book", storage=search.storage(url))
        assert states(study) == [TrialState.COMPLETE] * 6  # --quick: 6 trials in all
        workers = {t.user_attrs["worker"] for t in study.trials}
        assert len(workers) >= 2
    finally:
        cluster.remove()
