"""Plumbing shared by the experiment scripts: arguments, data, kernel path, output, plots.

Every script builds its parser with ``parser()`` (the common options ``--backend``,
``--dataset``, ``--seed``, ``--out``, ``--quick``, and ``--data-dir``, ``--offline`` where
it reads an image dataset) and its own settings with ``option()`` (help with the default,
and the ``--quick`` value), calls ``start()`` to print what it runs on, and ends with
``finish()``, which writes ``<out>/<name>.json`` and ``<out>/<name>.png``. ``cli(main)``
runs it: a user error is one line naming the flag, exit status 2; Ctrl-C exits 130.

The JSON of every script has the same shape::

    {"experiment": name, "config": {...}, "backend": "numpy", "dataset": "fashion-mnist",
     "kernel_path": "fused", "kernel_calls": {...}, "summary": {...},
     "results": {series label: {curves..., "final": {...}}}, "elapsed_s": 12.3}

``summary`` holds the few numbers the index page of ``run_all.py`` shows beside the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

import accel
from accel import datasets, dispatch
from accel.ewma import ewma

HERE = Path(__file__).resolve().parent

DEFAULT_OUT = HERE / "out"
IMAGE_DATASETS = ("mnist", "fashion-mnist")
ALL_DATASETS = (*IMAGE_DATASETS, "moons", "circles", "spiral")


# -- arguments


class UserError(Exception):
    """A setting the run cannot use: ``cli`` prints it as one line (name the flag to change)
    and exits with status 2, as argparse does for a malformed flag."""


class Parser(argparse.ArgumentParser):
    """argparse, with an error as one line (no usage block) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help once, and only when there is a default to
    show (not for flags, options without one, or help that already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default is not None and action.default is not False
                and action.default != argparse.SUPPRESS and "default" not in text
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def description(doc: str) -> str:
    """A script's docstring's first paragraph as one line (its --help description)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def parser(name: str, doc: str, datasets_allowed=ALL_DATASETS,
           default_dataset: str = "mnist") -> Parser:
    """A parser with the options every script shares; ``doc`` is the script's docstring
    (its first paragraph is the description). ``--data-dir`` and ``--offline`` only where
    an image dataset can be chosen."""
    p = Parser(prog=f"{name}.py", description=description(doc),
               formatter_class=HelpFormatter)
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend (auto: CuPy when it sees a GPU, else NumPy)")
    if datasets_allowed:
        images = [d for d in datasets_allowed if d in IMAGE_DATASETS]
        p.add_argument("--dataset", choices=datasets_allowed, default=default_dataset,
                       help="dataset" + (" (the image sets are read from --data-dir, "
                                         "$ACCEL_DATA_DIR, the cache or /usr/share/datasets, "
                                         "or downloaded once)" if images else
                                         " (generated, seeded by --seed)"))
        if images:
            p.add_argument("--data-dir", default=None, metavar="DIR",
                           help="folder holding <dataset>/ (default: $ACCEL_DATA_DIR, then "
                                "~/.cache/accel, then /usr/share/datasets)")
            p.add_argument("--offline", action="store_true",
                           help="never download; fail with the list of places searched")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed for weights, batches, sampling")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings that finish in seconds (used by the tests)")
    p.set_defaults(experiment=name)
    return p


def option(p, flag: str, defaults: dict, quick: dict, help: str, type=positive_int, **kw):
    """A script setting ``flag`` (its key in ``defaults`` is the flag without dashes): the
    help says its default, and its ``--quick`` value when that differs. argparse's default
    is None, so ``config_from`` knows whether it was given."""
    key = flag.lstrip("-").replace("-", "_")
    note = f"default: {_shown(defaults[key])}"
    if key in quick and quick[key] != defaults[key]:
        note += f"; {_shown(quick[key])} with --quick"
    p.add_argument(flag, type=type, default=None, help=f"{help} ({note})", **kw)


def _shown(value) -> str:
    return "none" if value is None else str(value)


def cli(main) -> None:
    """Run a script's ``main()`` as a command: a ``UserError`` is one line on stderr and exit
    status 2; Ctrl-C ends with status 130 (what finished is written by the script)."""
    prog = Path(sys.argv[0]).name
    try:
        main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def config_from(args, defaults: dict, quick: dict, names=()) -> dict:
    """``defaults``, with ``quick`` over it under ``--quick``, then every option in ``names``
    the user gave explicitly (argparse default None) over that."""
    cfg = dict(defaults)
    if args.quick:
        cfg.update(quick)
    for k in names:
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = v
    return cfg


# -- what runs where


def kernel_path() -> str:
    """"fused" or "reference": the path ``accel.dispatch`` takes for optimizer updates and
    batch norm."""
    return dispatch.mode()


def kernel_calls() -> dict:
    """{"op/path": count} since ``start()``: which path each op actually took."""
    return {f"{op}/{path}": n for (op, path), n in sorted(dispatch.calls().items())}


class Run:
    """State of one script run: args, backend, timing."""

    def __init__(self, args, backend):
        self.args, self.backend = args, backend
        self.name = args.experiment
        self.dataset = getattr(args, "dataset", None)
        self.start = time.perf_counter()


def start(args) -> Run:
    """Pick the backend and print the backend, kernel path and dataset."""
    backend = accel.get_backend(args.backend)
    dispatch.reset_calls()
    dataset = getattr(args, "dataset", None) or "(none: synthetic input)"
    print(f"[{args.experiment}] backend: {backend.name}   kernel path: {kernel_path()}   "
          f"dataset: {dataset}" + ("   (quick)" if args.quick else ""), flush=True)
    return Run(args, backend)


# -- data


def load_data(args, dtype=np.float32, **generated):
    """``(x_train, t_train), (x_test, t_test)`` of ``args.dataset`` as NumPy arrays.

    A missing image dataset is a ``UserError``: one line saying where it looked and which
    flags load it another way (``cli`` exits with status 2).
    """
    name = args.dataset
    try:
        if name in IMAGE_DATASETS:
            return datasets.load(name, dtype=dtype, data_dir=args.data_dir,
                                 download=not args.offline)
        if getattr(args, "data_dir", None) is not None:
            print(f"note: --data-dir does not apply to the generated dataset {name!r}",
                  file=sys.stderr)
        return datasets.load(name, dtype=dtype, seed=args.seed, **generated)
    except datasets.DatasetNotFoundError as exc:
        raise UserError(no_data_line(exc, args)) from None


def no_data_line(exc, args) -> str:
    """A missing dataset in command-line terms: where it looked, why nothing was
    downloaded, and the flags that load it another way."""
    name = exc.dataset or args.dataset
    where = ", ".join(f"{'--data-dir' if label == 'data_dir' else label} {folder}"
                      for label, folder in exc.searched)
    if args.offline:
        why, offline = "no download: --offline", ", drop --offline to download it"
    else:
        notes = [" ".join(str(n).split()) for n in exc.notes]
        why = notes[0] if notes else "the download failed"
        why, offline = (why if len(why) <= 160 else why[:159] + "…"), ""
    others = [d for d in ALL_DATASETS if d != name]
    return (f"dataset {name!r} not found (looked in: {where}; {why}); give --data-dir DIR (a "
            f"folder holding {name}/ with its IDX files; or set ACCEL_DATA_DIR){offline}, or "
            f"choose --dataset {'|'.join(others)}")


def subset(x, t, n, seed=None):
    """The first ``n`` samples (as the book does), or ``n`` shuffled ones when ``seed`` is
    given."""
    if seed is not None:
        idx = np.random.default_rng(seed).permutation(x.shape[0])[:n]
        return x[idx], t[idx]
    return x[:n], t[:n]


# -- progress for loops over runs/trials (the trainer's own bar is per epoch)


class Steps:
    """Prints one line per finished item: ``[3/16] label  info  (1.2s, eta 0:20)``."""

    def __init__(self, total: int, desc: str = ""):
        self.total, self.desc, self.n = total, desc, 0
        self.t0 = self.last = time.perf_counter()

    def done(self, label: str, **info) -> None:
        self.n += 1
        now = time.perf_counter()
        took, self.last = now - self.last, now
        eta = (now - self.t0) / self.n * (self.total - self.n)
        parts = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in info.items())
        print(f"  [{self.n}/{self.total}] {label}  {parts}  ({took:.1f}s, eta "
              f"{int(eta) // 60}:{int(eta) % 60:02d})", flush=True)


# -- numbers


def smooth(values, beta: float = 0.9):
    """Bias-corrected exponentially weighted average (≈ the last 1/(1−β) values)."""
    return ewma(np.asarray(values, dtype=np.float64), beta=beta)


def rounded(values, digits: int = 5) -> list:
    """A list of floats rounded to ``digits`` significant digits (small JSON)."""
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel().tolist():
        if v == 0 or not math.isfinite(v):
            out.append(v if math.isfinite(v) else None)
        else:
            out.append(float(f"{v:.{digits}g}"))
    return out


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[\d.eE+-]+|null|true|false)(?:,\s*(?:-?[\d.eE+-]+|null|"
                          r"true|false))*)\s*\]")


def _clean(o):
    """NaN/inf → None, so the file is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


# -- plots


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- output


def finish(run: Run, config: dict, results: dict, fig=None, summary=None, **extra) -> dict:
    """Write ``<out>/<name>.json`` (and ``<name>.png`` from ``fig``); print where; return the
    record."""
    out = Path(run.args.out)
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - run.start
    config = dict(config, seed=run.args.seed, quick=bool(run.args.quick))
    record = {
        "experiment": run.name,
        "config": config,
        "backend": run.backend.name,
        "dataset": run.dataset,
        "kernel_path": kernel_path(),
        "kernel_calls": kernel_calls(),
        "summary": summary or {},
        "figure_title": _title(fig),
        "results": results,
        **extra,
        "elapsed_s": round(elapsed, 2),
    }
    json_path = out / f"{run.name}.json"
    text = json.dumps(_clean(record), default=_json_default, indent=1)
    # lists of numbers on one line each: readable and a third of the size
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",")
                            + "]", text)
    json_path.write_text(text + "\n")
    paths = [json_path]
    if fig is not None:
        png = out / f"{run.name}.png"
        fig.savefig(png, dpi=int(os.environ.get("ACCEL_PLOT_DPI", "80")),
                    bbox_inches="tight")
        pyplot().close(fig)
        paths.insert(0, png)
    if summary:
        for k, v in summary.items():
            print(f"  {k}: {v}")
    calls = record["kernel_calls"]
    if calls:
        print("  kernel calls: " + ", ".join(f"{k} ×{n}" for k, n in calls.items()))
    print(f"[{run.name}] wrote {', '.join(str(p) for p in paths)}  ({elapsed:.1f}s)",
          flush=True)
    return record


def _title(fig) -> str | None:
    """The figure's title (its suptitle, else its first axes' title)."""
    if fig is None:
        return None
    return fig.get_suptitle() or (fig.axes[0].get_title() if fig.axes else None) or None


# -- training


def make_net(run, n_in, n_out, hidden, seed=None, **kwargs):
    """A MultiLayerNet on the run's backend."""
    return accel.MultiLayerNet(n_in, hidden, n_out, backend=run.backend, seed=seed, **kwargs)


def train(net, opt, data, *, epochs=None, iterations=None, batch_size=100, seed=0,
          schedule=None, evaluate_sample=None, verbose=False, label=None, on_evaluate=(),
          **trainer_kwargs):
    """Train with ``accel.Trainer`` on ``data`` = ((x, t), (x_test, t_test) or None) for
    ``epochs`` (or just enough epochs for ``iterations`` steps); returns the History.

    The same ``seed`` gives every run the same mini-batches. A run that diverges (NaN/Inf)
    goes on, as in the book, and shows as chance accuracy: the experiments plot it. On a
    terminal a tqdm bar named ``label`` shows the run's steps (advanced at each evaluation),
    beside the ``on_evaluate`` hooks given."""
    (x, t), test = data
    if epochs is None:
        epochs = -(-iterations * batch_size // x.shape[0])
    xt, tt = test if test is not None else (None, None)
    with series_bar(label) as bar:
        def advance(trainer):  # the bar follows the evaluations (every epoch, and the last)
            h = trainer.history
            bar.update(h.iterations - bar.n)
            if h.train_loss:
                bar.set_postfix_str(f"loss {h.train_loss[-1]:.4g}", refresh=False)

        trainer = accel.Trainer(net, opt, x, t, xt, tt, epochs=epochs, batch_size=batch_size,
                                schedule=schedule, evaluate_sample=evaluate_sample,
                                max_iterations=iterations, seed=seed, verbose=verbose,
                                on_nonfinite=None,  # let divergence show, as the book does
                                on_evaluate=[*on_evaluate, advance], **trainer_kwargs)
        bar.total = iterations or epochs * trainer.iterations_per_epoch()
        return trainer.fit()


@contextlib.contextmanager
def series_bar(label):
    """A tqdm bar for one series (a run of one setting), named ``label``, on a terminal only
    (a log gets the one line per series that ``Steps`` prints); closed on the way out."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=label, unit="it", leave=False, dynamic_ncols=True, file=sys.stderr,
               disable=None)  # None: off where stderr is not a terminal
    try:
        yield bar
    finally:
        bar.close()


def loss_curve_result(h, **extra) -> dict:
    """A loss-curve experiment's series: the curves and a "final" with the smoothed loss,
    the mean of the last 100 losses, the accuracies and the training time."""
    loss, tail = h.train_loss, h.train_loss[-100:]
    final = {"loss_smoothed": float(smooth(loss)[-1]),
             "loss_last100_mean": sum(tail) / len(tail),
             "train_acc": h.train_acc[-1], "test_acc": h.test_acc[-1],
             "train_s": round(h.elapsed_s, 2)}
    return {**extra, "train_loss": rounded(loss), "epoch": h.epoch, "train_acc": h.train_acc,
            "test_acc": h.test_acc, "final": final}


def architecture(n_in, hidden, n_out) -> str:
    """The layer sizes as the book writes them: "784-100×4-10", "2-50-20-3"."""
    if hidden and len(set(hidden)) == 1 and len(hidden) > 1:
        middle = [f"{hidden[0]}×{len(hidden)}"]
    else:
        middle = [str(h) for h in hidden]
    return "-".join([str(n_in), *middle, str(n_out)])


def n_classes(*labels) -> int:
    return int(max(int(np.max(t)) for t in labels)) + 1


def above_axis(losses, top: float):
    """Indices of the losses a y axis ending at ``top`` cuts off (NaN and None too)."""
    a = np.asarray([np.nan if v is None else v for v in losses], dtype=np.float64)
    return np.flatnonzero(~(a <= top))


def above_axis_note(losses, top: float) -> str:
    """" (▲ n losses above the axis, max m)" for a series the y axis cuts, else ""."""
    idx = above_axis(losses, top)
    if not idx.size:
        return ""
    vals = np.asarray([losses[i] for i in idx if losses[i] is not None], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    most = f", max {vals.max():.3g}" if vals.size else ""
    return f" (▲ {idx.size} losses above the axis{most})"


def loss_figure(results: dict, title: str, ylim=None, beta: float = 0.9):
    """Loss per iteration, raw (faint) and smoothed, one colour per series. With ``ylim``,
    a mini-batch loss above the axis is marked by a ▲ on its top edge (in the series'
    colour) and counted in the legend, so a cut spike is never silent."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, r) in enumerate(results.items()):
        c = f"C{i}"
        ax.plot(r["train_loss"], color=c, alpha=0.15, lw=0.7)
        note = above_axis_note(r["train_loss"], ylim[1]) if ylim else ""
        ax.plot(smooth(r["train_loss"], beta), color=c, lw=1.8, label=label + note)
        if note:
            idx = above_axis(r["train_loss"], ylim[1])
            ax.scatter(idx, np.full(idx.size, ylim[1]), marker="^", s=22, color=c,
                       edgecolor="k", lw=0.4, clip_on=False, zorder=4)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training loss (faint: per mini-batch; line: EWMA β={beta})")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
