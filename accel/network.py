"""MultiLayerNet: the book's fully connected network, on a flat parameter buffer."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from . import checkpoint, checks, dispatch, threads
from . import functional as F
from .backend import get_backend
from .decay_mask import MASKS, flat_block
from .flat import allocate
from .initializers import init_weight, weight_std
from .layers import (
    Affine,
    AffineActivation,
    BatchNorm,
    Dropout,
    ReLU,
    Sigmoid,
    SigmoidWithLoss,
    SoftmaxWithLoss,
    Tanh,
    reuse_outputs,
)

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
OUTPUTS = {"softmax": SoftmaxWithLoss, "sigmoid": SigmoidWithLoss}
# constructor arguments added after format-1 files were written, with the value those files
# had (a saved config without them loads as if it named these)
CONFIG_ADDED = {"bn_running_var_init": 1.0, "output": "softmax", "decay_mask": "weights"}


class MultiLayerNet:
    """Fully connected net: per hidden layer Affine → BatchNorm → activation → Dropout,
    then Affine → the output: ``output="softmax"`` (default; SoftmaxWithLoss, labels class
    ids or one-hot rows) or ``"sigmoid"`` with ``output_size=1`` (the course's week-1 binary
    output: one logit, SigmoidWithLoss, labels 0/1 as ints, floats or bools).

    Loss = mean cross-entropy (softmax) or mean binary cross-entropy computed from the logit
    (sigmoid) + ½·weight_decay·ΣW² over every weight matrix (the book's form; no decay on
    biases, gamma, beta; the course's λ/(2m)·ΣW² is ``weight_decay`` = λ/m).
    ``decay_mask="all"`` puts every parameter in the sum (``accel.decay_mask``: the rule the
    optimizers share). ``params`` and the dict ``gradient`` returns are views into one flat
    buffer each (``params.flat``, ``grads.flat``; the weight matrices first, in
    ``flat[:n_weights]``), so an optimizer updates the whole model in one pass.

    Labels ``t`` may be class ids (N,) or one-hot (N, C) (sigmoid: 0/1 of shape (N,) or
    (N, 1)). Float inputs of the other precision are cast to ``dtype``; integer inputs are
    refused (scale them to floats first).
    """

    def __init__(self, input_size, hidden_sizes, output_size, activation="relu",
                 weight_init="he", weight_decay=0.0, batchnorm=False, dropout=0.0,
                 dtype=np.float32, backend=None, seed=None, *, bn_momentum=0.9, bn_eps=1e-5,
                 bn_running_var_init=1.0, dropout_inverted=True, output="softmax",
                 decay_mask="weights"):
        sizes = _sizes(input_size, hidden_sizes, output_size)
        self.output = checks.one_of("output", output, OUTPUTS)
        if self.output == "sigmoid" and sizes[-1] != 1:
            raise ValueError(f"output='sigmoid' is one unit: it needs output_size=1, got "
                             f"output_size={output_size!r}")
        self.activation = checks.one_of("activation", activation, ACTIVATIONS)
        for i in range(len(sizes) - 1):  # fail on a bad name before allocating anything
            weight_std(weight_init, sizes[i], sizes[i + 1])
        self.weight_decay = checks.non_negative("weight_decay", weight_decay)
        self.decay_mask = checks.one_of("decay_mask", decay_mask, MASKS)
        self.dropout = checks.in_unit_interval("dropout", dropout)
        self.dtype = checks.floating_dtype("dtype", dtype)
        self.sizes, self.weight_init = sizes, weight_init
        self.batchnorm = checks.boolean("batchnorm", batchnorm)
        self.bn_momentum = checks.in_unit_interval("bn_momentum", bn_momentum)
        self.bn_eps = checks.positive("bn_eps", bn_eps)
        self.bn_running_var_init = checks.non_negative("bn_running_var_init",
                                                       bn_running_var_init)
        self.dropout_inverted = checks.boolean("dropout_inverted", dropout_inverted)
        self.backend = get_backend(backend)
        xp = self.backend.xp

        shapes = param_shapes(sizes, self.batchnorm)
        weights = [k for k in shapes if k[0] == "W"]
        layout = weights + [k for k in shapes if k[0] != "W"]
        try:
            self.params = allocate(xp, shapes, self.dtype, layout, weights=weights)
            self.grads = allocate(xp, shapes, self.dtype, layout, weights=weights)
        except (ValueError, MemoryError) as exc:  # sizes no memory can hold
            n = sum(int(np.prod(shape, dtype=object)) for shape in shapes.values())
            raise ValueError(f"input_size, hidden_sizes, output_size = {sizes[0]}, "
                             f"{sizes[1:-1]}, {sizes[-1]} give {n} parameters, too many to "
                             f"allocate ({exc})") from None
        self.n_weights = self.params.n_weights
        self.n_decayed = flat_block(self.params, self.decay_mask)  # the L2 term's flat[:n]
        # BatchNorm's running statistics: not parameters, but one flat buffer too, so the
        # non-finite guard checks (and a skipped step restores) them in one operation.
        n_hidden = len(sizes) - 2
        self.buffers = allocate(xp, {f"running_{s}{i}": (sizes[i],) for i in range(
            1, n_hidden + 1) if self.batchnorm for s in ("mean", "var")}, self.dtype)

        self.rng = self.backend.rng(checks.seed("seed", seed))
        for i in range(1, len(sizes)):
            self.params[f"W{i}"] = init_weight(self.rng, weight_init, sizes[i - 1], sizes[i],
                                               self.dtype)
            if f"gamma{i}" in shapes:
                self.params[f"gamma{i}"] = 1
                self.buffers[f"running_var{i}"] = self.bn_running_var_init

        p, g, buf = self.params, self.grads, self.buffers
        self.layers = []
        for i in range(1, len(sizes)):
            self.layers.append(Affine(p[f"W{i}"], p[f"b{i}"], g[f"W{i}"], g[f"b{i}"]))
            if i > n_hidden:
                break
            if self.batchnorm:
                self.layers.append(BatchNorm(
                    p[f"gamma{i}"], p[f"beta{i}"], bn_momentum, bn_eps,
                    running_mean=buf[f"running_mean{i}"], running_var=buf[f"running_var{i}"],
                    dgamma=g[f"gamma{i}"], dbeta=g[f"beta{i}"]))
            self.layers.append(ACTIVATIONS[self.activation]())
            if self.dropout > 0:
                self.layers.append(Dropout(self.dropout, dropout_inverted, rng=self.rng))
        self.layers[0].need_dx = False  # nothing below the first layer wants dL/dx
        self.last_layer = OUTPUTS[self.output]()
        self.passes = _fuse(self.layers)
        # the L2 term's gradient: views made once, so the fused op's site sees the same arrays
        self._decay = dispatch.Site(F.scaled_add)
        self._decayed_grads = self.grads.flat[:self.n_decayed]
        self._decayed_params = self.params.flat[:self.n_decayed]
        # the thread policy (accel.threads), applied as a pass starts: NumPy's BLAS only
        self._widest = max(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
        self._cpu = self.backend.name == "numpy"
        reuse_outputs([*self.layers, self.last_layer])  # each consumed within its step

    def __repr__(self) -> str:
        return (f"MultiLayerNet(sizes={self.sizes}, activation={self.activation!r}, "
                f"batchnorm={self.batchnorm}, dropout={self.dropout}, "
                f"weight_decay={self.weight_decay}, output={self.output!r}, dtype={self.dtype}, "
                f"backend={self.backend.name!r})")

    # -- the public pair the trainer, gradcheck and the benchmarks use

    def prepare(self, x, t=None, *, names=("x", "t")):
        """``x`` (and ``t``) checked and on this network's device and dtype: float features of
        the input size (other float precisions cast, integers refused), labels as class ids in
        range or one-hot rows, cast to the network's dtype (sigmoid output: 0/1, as floats of
        the network's dtype, shape (N,)). Returns x, or (x, t) when ``t`` is given. Check data
        once with this, then train on it with ``loss_and_grads``. ``names`` are what error
        messages call x and t."""
        x = checks.array(names[0], _asarray(self.backend, names[0], x), dtype=self.dtype)
        n_in = math.prod(x.shape[1:]) if x.ndim > 1 else 0
        if n_in != self.sizes[0]:
            raise ValueError(f"{names[0]} must have {self.sizes[0]} features per sample, "
                             f"got shape {tuple(x.shape)}")
        if t is None:
            return x
        t = _asarray(self.backend, names[1], t)
        if self.output == "sigmoid":
            return x, checks.binary_labels(names[1], t, x.shape[0], dtype=self.dtype)
        t = checks.labels(names[1], t, x.shape[0], self.sizes[-1])
        if t.ndim == 2 and t.dtype != self.dtype:  # bool or integer one-hot rows
            t = t.astype(self.dtype)
        return x, t

    def _prepare_pair(self, x, t):
        """``prepare(x, t)`` for the calls that need labels: None is refused, not read as
        "no labels"."""
        if t is None:
            raise TypeError("t must be the labels (class ids of shape (n,), one-hot rows, or "
                            "0/1 for a sigmoid output), got None")
        return self.prepare(x, t)

    def loss_and_grads(self, x, t):
        """(loss, grads) of one training step on prepared ``x``, ``t`` (see ``prepare``;
        nothing is checked here): the train-mode loss as a 0-d array on the device (no
        transfer), and the gradients, views into the flat buffer ``grads.flat``, refilled by
        every call."""
        loss = self._loss(x, t, True)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.passes):
            dout = layer.backward(dout)
        if self.weight_decay:  # g ← g + λ·W over the weights, one fused op
            self._decay(self._decayed_grads, self._decayed_params,
                        scalars=(self.weight_decay,))
        return loss, self.grads

    # -- the book's interface (each call checks its input)

    def predict(self, x, train: bool = False):
        """Scores (N, output_size) before the softmax, a new array; with
        ``output="sigmoid"`` the logit z, shape (N, 1): the probability of class 1 is σ(z),
        and z > 0 predicts 1."""
        train = checks.boolean("train", train)
        return self._predict(self.prepare(x), train).copy()  # not the last layer's buffer

    def _predict(self, x, train):
        if self._cpu:
            threads.apply(2 * x.shape[0] * self._widest)  # the largest product of the pass
        for layer in self.passes:
            x = layer.forward(x, train)
        return x

    def loss(self, x, t, train: bool = False) -> float:
        """Cross-entropy (binary for a sigmoid output) + ½·weight_decay·ΣW² (Σθ² with
        ``decay_mask="all"``), as a Python float."""
        return float(self._loss(*self._prepare_pair(x, t), checks.boolean("train", train)))

    def forward_loss(self, x, t, train: bool = False):
        """``loss`` of prepared ``x``, ``t`` (see ``prepare``; nothing is checked) as a 0-d
        array on the device: nothing is read back (the trainer's after-update loss)."""
        return self._loss(x, t, train)

    def _loss(self, x, t, train):
        loss = self.last_layer.forward(self._predict(x, train), t, check=False)
        if self.weight_decay:
            w = self.params.flat[:self.n_decayed]
            loss = loss + 0.5 * self.weight_decay * (w @ w)
        return loss

    def accuracy(self, x, t, batch_size: int = 4096) -> float:
        """Fraction of samples whose highest score is the true class (sigmoid output: whose
        σ(z) > 0.5, i.e. z > 0, matches the 0/1 label), evaluated in batches."""
        checks.positive("batch_size", batch_size, integer=True)
        x, t = self._prepare_pair(x, t)
        if self.output == "sigmoid":
            t = t > 0.5
        elif t.ndim == 2:
            t = t.argmax(axis=1)
        correct = 0
        for s in range(0, x.shape[0], batch_size):
            scores = self._predict(x[s:s + batch_size], False)
            y = scores[:, 0] > 0 if self.output == "sigmoid" else scores.argmax(axis=1)
            correct += (y == t[s:s + batch_size]).sum()
        return float(self.backend.xp.asarray(correct)) / x.shape[0]

    def gradient(self, x, t):
        """Backpropagated gradients of ``loss(x, t, train=True)``: a dict like ``params``,
        of views into the flat gradient buffer ``grads.flat`` (refilled by every call)."""
        return self.loss_and_grads(*self._prepare_pair(x, t))[1]

    # -- state that is not a parameter

    def batchnorm_layers(self):
        return [layer for layer in self.layers if isinstance(layer, BatchNorm)]

    # -- checkpoints (format: accel.checkpoint)

    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture (JSON-serializable)."""
        return checkpoint.jsonable({
            "input_size": self.sizes[0], "hidden_sizes": self.sizes[1:-1],
            "output_size": self.sizes[-1], "activation": self.activation,
            "weight_init": self.weight_init, "weight_decay": self.weight_decay,
            "batchnorm": self.batchnorm, "dropout": self.dropout, "dtype": self.dtype.name,
            "bn_momentum": self.bn_momentum, "bn_eps": self.bn_eps,
            "bn_running_var_init": self.bn_running_var_init,
            "dropout_inverted": self.dropout_inverted, "output": self.output,
            "decay_mask": self.decay_mask,
        })

    def state_dict(self) -> dict:
        """A snapshot of everything a checkpoint keeps: ``{"config", "params": {name: array},
        "bn1": {"running_mean", "running_var"}, ..., "rng"}`` (copies, on the device; "rng"
        is the dropout generator's state, None without dropout)."""
        state = {"config": self.config(),
                 "params": {k: v.copy() for k, v in self.params.items()},
                 "rng": checkpoint.rng_state(self.rng) if self.dropout > 0 else None}
        for i, bn in enumerate(self.batchnorm_layers(), 1):
            state[f"bn{i}"] = {"running_mean": bn.running_mean.copy(),
                               "running_var": bn.running_var.copy()}
        return state

    def _state_targets(self) -> dict:
        """(section, name) → the live array ``load_state_dict`` copies into."""
        wanted = {("params", k): v for k, v in self.params.items()}
        for i, bn in enumerate(self.batchnorm_layers(), 1):
            wanted[(f"bn{i}", "running_mean")] = bn.running_mean
            wanted[(f"bn{i}", "running_var")] = bn.running_var
        return wanted

    def load_state_dict(self, state: dict) -> None:
        """Copy a ``state_dict`` (from this process or a checkpoint, any backend) into this
        network, whose architecture must be the saved one. Everything is checked before
        anything changes; ValueError/TypeError name the problem."""
        wanted = self.check_state_dict(state)
        for (sec, name), target in wanted.items():
            target[...] = self.backend.asarray(state[sec][name])
        if self.dropout > 0 and not checkpoint.set_rng_state(self.rng, state.get("rng")):
            warnings.warn("the dropout generator's state was saved on another backend (or "
                          "not at all); dropout masks after loading come from this network's "
                          "own generator", stacklevel=3)

    def check_state_dict(self, state: dict) -> dict:
        """Raise what ``load_state_dict(state)`` would refuse (ValueError/TypeError: another
        architecture or dtype, a missing or misshapen array); changes nothing. Returns
        (section, name) → the live array that the saved one would be copied into."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        saved, mine = state.get("config"), self.config()
        if isinstance(saved, dict):
            saved = {**CONFIG_ADDED, **saved}
        if saved != mine:
            saved = saved if isinstance(saved, dict) else {}
            diff = sorted(k for k in set(mine) | set(saved) if saved.get(k) != mine.get(k))
            raise ValueError("the saved network differs from this one in " + ", ".join(
                f"{k} (saved {saved.get(k)!r}, here {mine.get(k)!r})" for k in diff))
        wanted = self._state_targets()
        for (sec, name), target in wanted.items():
            a = state.get(sec, {}).get(name) if isinstance(state.get(sec), dict) else None
            if a is None:
                raise ValueError(f"array {sec}/{name} is missing")
            if not (hasattr(a, "shape") and hasattr(a, "dtype")) or np.isscalar(a):
                raise TypeError(f"{sec}/{name} must be an array, got {a!r:.100}")
            if a.shape != target.shape or a.dtype != target.dtype:
                raise ValueError(f"array {sec}/{name} is {a.dtype} {a.shape}, this network "
                                 f"needs {target.dtype} {target.shape}")
        return wanted

    def save(self, path):
        """Write the architecture, parameters, BatchNorm running statistics and dropout
        generator state to ``path`` (a .npz with a JSON header, written atomically; see
        ``accel.checkpoint``). Returns the path. ``MultiLayerNet.load(path)`` reads it."""
        return checkpoint.save(checks.path("path", path), {"network": self.state_dict()},
                               kind="network")

    @classmethod
    def load(cls, path, backend=None) -> MultiLayerNet:
        """The network saved at ``path`` by ``save`` (or inside a Trainer checkpoint), on
        ``backend`` (default "auto"; a file saved on CuPy loads on NumPy and back).
        Raises FileNotFoundError or ``accel.checkpoint.CheckpointError`` naming the file."""
        backend = get_backend(backend)  # a bad backend is the caller's, not the file's
        section = checkpoint.section(checkpoint.load(checks.path("path", path)), "network",
                                     path, "network")
        config = section.get("config")
        if not isinstance(config, dict):
            raise checkpoint.CheckpointError(f"{path}: the network section has no config")
        try:
            # the saved arrays must fit the config before it allocates anything: a crafted
            # config cannot ask for more memory than the file itself holds
            shapes = param_shapes(_sizes(config.get("input_size"), config.get("hidden_sizes"),
                                         config.get("output_size")),
                                  config.get("batchnorm") is True)
            params = section.get("params") if isinstance(section.get("params"), dict) else {}
            for k, shape in shapes.items():
                got = getattr(params.get(k), "shape", None)
                if got != shape:
                    raise ValueError(f"array params/{k} is {got}, the config needs {shape}")
            net = cls(**config, backend=backend)
        except (TypeError, ValueError) as exc:
            raise checkpoint.CheckpointError(f"{path}: bad network config ({exc})") from exc
        checkpoint.restore(net, section, path)
        return net


def _asarray(backend, name, a):
    """``a`` as an array of ``backend``; what cannot be one (None, a dict, ragged lists) is
    refused naming ``name``."""
    try:
        out = backend.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of numbers, got {a!r:.100} ({exc})") from None
    if out.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of numbers, got {a!r:.100} (dtype "
                        f"{out.dtype})")
    return out


def _sizes(input_size, hidden_sizes, output_size) -> list:
    """[input_size, *hidden_sizes, output_size], each checked (a single int is one layer)."""
    checks.positive("input_size", input_size, integer=True)
    checks.positive("output_size", output_size, integer=True)
    if isinstance(hidden_sizes, numbers.Integral) and not isinstance(hidden_sizes, bool):
        hidden_sizes = [hidden_sizes]
    if not isinstance(hidden_sizes, (list, tuple)):
        raise TypeError(f"hidden_sizes must be an int or a list of ints (e.g. [100] * 4), got "
                        f"{hidden_sizes!r}")
    for i, h in enumerate(hidden_sizes):
        checks.positive(f"hidden_sizes[{i}]", h, integer=True)
    return [int(input_size), *(int(h) for h in hidden_sizes), int(output_size)]


def param_shapes(sizes, batchnorm: bool) -> dict:
    """name → shape of every parameter of a net with these layer sizes."""
    shapes = {}
    for i in range(1, len(sizes)):
        shapes[f"W{i}"], shapes[f"b{i}"] = (sizes[i - 1], sizes[i]), (sizes[i],)
        if batchnorm and i < len(sizes) - 1:
            shapes[f"gamma{i}"] = shapes[f"beta{i}"] = (sizes[i],)
    return shapes


def _fuse(layers) -> list:
    """The layers as the network runs them: an Affine directly followed by its activation
    (no BatchNorm between) becomes one AffineActivation; the rest run as they are."""
    passes, i = [], 0
    while i < len(layers):
        if (isinstance(layers[i], Affine) and i + 1 < len(layers)
                and isinstance(layers[i + 1], (ReLU, Sigmoid, Tanh))):
            passes.append(AffineActivation(layers[i], layers[i + 1]))
            i += 2
        else:
            passes.append(layers[i])
            i += 1
    return passes
