"""A training step of the book's 784-100x4-10 MLP on the CPU: the fused kernels against the xp
reference and torch, and the array operations a step runs.

Batch 128, Adam, float32 (NumPy), in the order of llm.c's dev/cuda files:

1. reference: the step (``net.loss_and_grads``, ``Adam.update``) with
   ``dispatch.use("reference")``: every operation plain xp;
2. kernel: the same step on the fused path (the default);
3. validate: one step of each from the same network; the parameters must agree to float32
   rounding;
4. time (medians): both paths in this process; then accel's fused step and the same model in
   torch (``zero_grad``, forward, cross-entropy, ``backward``, ``Adam(fused=True).step``),
   each in a fresh process, alternating for ``--rounds`` rounds (the ratio comes from
   interleaved processes, not from two moments).

Then the array operations per step (``accel.opcount``; on a GPU each is a kernel launch), per
layer, plain and with BatchNorm, fused and reference. Writes mlp_step.json.

    python benchmarks/speed/mlp_step.py [--quick] [--rounds 7] [--profile] [--out DIR]
"""

# ruff: noqa: B023  (the timed closures run within the loop iteration that defines them)

from __future__ import annotations

import argparse

import numpy as np
import timing

SIZES = [784, 100, 100, 100, 100, 10]
BATCH = 128


def data():
    rng = np.random.default_rng(2)
    return (rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32),
            rng.integers(0, SIZES[-1], BATCH))


def network(batchnorm=False, backend="numpy"):
    """The MLP (seed 0) and its Adam, and the batch as the network takes it."""
    from accel import MultiLayerNet, optim

    net = MultiLayerNet(SIZES[0], SIZES[1:-1], SIZES[-1], batchnorm=batchnorm,
                        dtype=np.float32, backend=backend, seed=0)
    x, t = net.prepare(*data()) if backend == "numpy" else data()
    return net, optim.Adam(lr=1e-3), x, t


def step_fn(net, opt, x, t):
    return lambda: opt.update(net.params, net.loss_and_grads(x, t)[1])


def validate():
    """Largest |fused − reference| of the loss and the gradients (relative to the largest
    |value|) from the same network and batch, and of the parameters after one Adam step
    (relative to lr: the first step moves each by at most lr, and a gradient near ε may round
    either way); raises when above float32 rounding."""
    from accel import dispatch

    got = []
    for path in ("fused", "reference"):
        net, opt, x, t = network()
        with dispatch.use(path):
            loss, grads = net.loss_and_grads(x, t)
            g = np.array(grads.flat)
            opt.update(net.params, grads)
        got.append((loss, g, np.array(net.params.flat)))
    (loss, g, p), (loss_ref, g_ref, p_ref) = got
    err = dict(loss=abs(float(loss) - float(loss_ref)) / abs(float(loss_ref)),
               grads=float(np.abs(g - g_ref).max() / np.abs(g_ref).max()),
               step_over_lr=float(np.abs(p - p_ref).max() / opt.lr))
    if err["loss"] > 1e-5 or err["grads"] > 1e-5 or err["step_over_lr"] > 0.1:
        raise SystemExit(f"the fused step does not match the reference: {err}")
    return err


def in_process(quick):
    """Median seconds of the step on each path, in this process."""
    from accel import dispatch

    out = {}
    for path in ("fused", "reference"):
        net, opt, x, t = network()
        with dispatch.use(path):
            out[f"{path}_s"] = timing.median(step_fn(net, opt, x, t), 15 if quick else 101,
                                             warmup=5)
            out[f"{path}_path"] = dispatch.last_path("adam")
    return out, net.params.flat.size


def accel_worker(quick):
    net, opt, x, t = network()
    return {"step_s": timing.median(step_fn(net, opt, x, t), 15 if quick else 101, warmup=5)}


def torch_worker(quick):
    import torch

    torch.manual_seed(0)
    mods = []
    for i in range(len(SIZES) - 1):
        mods.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
        if i < len(SIZES) - 2:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, t = (torch.from_numpy(a) for a in data())

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), t).backward()
        opt.step()

    return {"step_s": timing.median(step, 15 if quick else 101, warmup=5),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def rounds(quick, n):
    """accel's and torch's step, each in a fresh process, alternating ``n`` times: per-round
    seconds and their medians."""
    times, version = {"accel": [], "torch": []}, None
    for r in range(n):
        for kind in times:
            res = timing.run_worker(__file__, "--worker", kind, *(["--quick"] if quick else []))
            times[kind].append(res["step_s"])
            version = res.get("torch", version)
        print(f"round {r + 1}/{n}: accel {times['accel'][-1] * 1e3:.3f} ms, torch "
              f"{times['torch'][-1] * 1e3:.3f} ms", flush=True)
    ratio = [a / t for a, t in zip(times["accel"], times["torch"])]
    return dict(accel=timing.spread(times["accel"]), torch=timing.spread(times["torch"]),
                accel_over_torch=timing.spread(ratio), rounds_s=times, torch_version=version)


def count_ops():
    """Array operations per step, plain and with BatchNorm, fused and reference:
    {"total", "by_scope", "ops"} for each (the second step: the first also makes Adam's m, v)."""
    from accel import dispatch, opcount

    out = {}
    for batchnorm in (False, True):
        for path in ("fused", "reference"):
            net, opt, x, t = network(batchnorm, opcount.backend())
            with dispatch.use(path):
                count = [opcount.training_step(net, opt, x, t) for _ in range(2)][-1]
            out[f"{'bn' if batchnorm else 'plain'}_{path}"] = dict(
                total=count.total, by_scope=dict(count.by_scope), ops=dict(count.ops))
    return out


def profile(reps=200):
    """Median seconds of each part of the fused step, each part timed alone."""
    net, opt, x, t = network()
    grads = net.loss_and_grads(x, t)[1]

    def backward():
        dout = net.last_layer.backward(1.0)
        for layer in reversed(net.passes):
            dout = layer.backward(dout)

    parts = {"forward+loss": timing.median(lambda: net.loss(x, t, train=True), reps),
             "backward (all layers)": timing.median(backward, reps),
             "adam update": timing.median(lambda: opt.update(net.params, grads), reps)}
    xin = x
    for i, layer in enumerate(net.passes):  # as the network runs them (Affine+ReLU fused)
        parts[f"forward {i}:{type(layer).__name__}"] = timing.median(
            lambda: layer.forward(xin, True), reps)
        xin = layer.forward(xin, True)
    return parts


def main(argv=None):
    ap = timing.parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="15 timed steps, 2 rounds")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternating accel/torch process rounds (default: 7; 2 with --quick)")
    ap.add_argument("--no-torch", action="store_true", help="no torch processes")
    ap.add_argument("--profile", action="store_true", help="also time the fused step's parts")
    timing.add_out(ap, "mlp_step.json")
    ap.add_argument("--worker", choices=("accel", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        timing.reply((accel_worker if args.worker == "accel" else torch_worker)(args.quick))
        return 0
    n_rounds = args.rounds if args.rounds is not None else 2 if args.quick else 7
    if n_rounds < 1:
        ap.error(f"--rounds must be >= 1, got {n_rounds}")
    load = timing.check_load()
    err = validate()
    times, n_params = in_process(args.quick)
    row = dict(shape=SIZES, batch=BATCH, dtype="float32", n=int(n_params), errors=err,
               **times, speedup_vs_reference=times["reference_s"] / times["fused_s"])
    why = "--no-torch" if args.no_torch else timing.torch_missing()
    paired = None if why else rounds(args.quick, n_rounds)
    if paired:
        row.update(fused_process_s=paired["accel"]["median"],
                   torch_s=paired["torch"]["median"],
                   fused_over_torch=paired["accel_over_torch"]["median"], rounds=paired)
    ops = count_ops()
    print(f"784-100x4-10 step, batch {BATCH}, Adam: fused {times['fused_s'] * 1e3:.3f} ms, "
          f"reference {times['reference_s'] * 1e3:.3f} ms "
          f"({row['speedup_vs_reference']:.2f}x), path {times['fused_path']}")
    if paired:
        print(f"in alternating processes ({n_rounds} rounds, medians): accel "
              f"{row['fused_process_s'] * 1e3:.3f} ms, torch {row['torch_s'] * 1e3:.3f} ms, "
              f"accel/torch {row['fused_over_torch']:.2f}")
    else:
        print(f"torch rows skipped: {why}")
    print("array operations per step (each a kernel launch on a GPU):")
    for key, c in ops.items():
        parts = ", ".join(f"{k} {v}" for k, v in c["by_scope"].items())
        print(f"  {key:<16}{c['total']:4d}   ({parts})")
    if args.profile:
        row["profile_s"] = profile()
        print("fused step by part (ms): " + ", ".join(
            f"{k} {v * 1e3:.3f}" for k, v in row["profile_s"].items()))
    meta = timing.machine(load, quick=args.quick, rounds=n_rounds,
                          torch=paired and paired["torch_version"], torch_skipped=why)
    timing.write_json(args.out, "mlp_step", dict(meta=meta, rows=[row], ops_per_step=ops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
