"""Optimizers with the book's interface: ``update(params, grads)`` changes ``params`` in place.

Each optimizer's math is one rule of ``accel.functional`` (the ``xp`` reference, the ground
truth the fused kernels are tested against) taking (param, grad, *state, clip, *scalars); an
optimizer class holds the hyperparameters and state and computes the scalars that depend only
on the step (bias corrections) once per step on the host. When ``params`` and
``grads`` are a network's flat buffers (they have ``.flat``), a step is one call over the whole
model; otherwise one call per array. ``lr`` may be changed between steps.

``weight_decay`` (every optimizer but AdamW) is the coupled L2 term g ← g + wd·p; AdamW's is
decoupled: p ← p·(1 − lr·wd) before the Adam step. ``decay_mask`` says which parameters
either applies to, by the one rule the network's L2 term follows too (``accel.decay_mask``):
"weights" (default: a network's weight matrices; every array of a plain dict, as torch),
"all", or a collection of names.

``clip_norm=c`` clips by the global L2 norm of all gradients, as
``torch.nn.utils.clip_grad_norm_(params, c)`` before the torch optimizer's step: the step
uses g·min(1, c/(‖g‖ + 1e-6)), weight decay added after. The norm is one fused reduction over
the flat gradient buffer (one per array for a plain dict) that writes the factor into a small
device array the update kernel reads: nothing is read back to the host, and ``grads`` are
left as they are.

``update(params, grads, record=...)`` takes the non-finite guard's device record (see
``accel.nonfinite``): a step the guard marks bad changes nothing, decided on the device. The
step counter ``t`` counts ``update`` calls; the updates skipped on the device are subtracted
in the kernel (Adam's bias correction counts the applied ones), and from ``t`` itself when the
host reads the record (``skipped(n)``).
"""

from __future__ import annotations

import inspect

import numpy as np

from . import checks, dispatch
from . import functional as F
from .backend import array_module, get_backend
from .decay_mask import check as check_decay_mask
from .decay_mask import decayed_names, flat_block

# hyperparameters added after checkpoints were written, with the behaviour those files had
# (their optimizers decayed every parameter they were given)
HYPERPARAMETERS_ADDED = {"decay_mask": "all", "clip_norm": None}

# -- the optimizers


class Optimizer:
    """Base class: holds lr and per-buffer state, runs one rule over params/grads."""

    rule = None  # the rule of accel.functional
    state_names: tuple = ()

    def __init__(self, lr, weight_decay=0.0, decay_mask="weights", clip_norm=None):
        self.lr = lr
        self.weight_decay = checks.non_negative("weight_decay", weight_decay)
        self.decay_mask = check_decay_mask(decay_mask)
        self.clip_norm = clip_norm
        self.t = 0  # steps taken
        self.state: dict = {}  # key ("flat" or a param name) → tuple of state arrays
        self._sites: dict = {}  # key → the dispatch Site of its update
        self._clip_sites: dict = {}  # key → the Site of its gradient's share of the norm
        self._flat_pair = None  # (params, grads, mask, their flats, names, pairs) of the last

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = float(checks.positive("lr", value))

    @property
    def clip_norm(self):
        return self._clip_norm

    @clip_norm.setter
    def clip_norm(self, value):
        self._clip_norm = checks.optional(checks.positive, "clip_norm", value)
        self._clip = None  # [factor, Σg²] on the device: made afresh (factor 1) at next use

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g})"

    # -- checkpoints

    def hyperparameters(self) -> dict:
        """The constructor arguments (name → value, lr included) that rebuild this optimizer."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {k: getattr(self, k) for k in names}

    def state_dict(self) -> dict:
        """A snapshot of the optimizer: ``{"type", "hyperparameters", "t", "state"}``, where
        ``state`` maps each buffer key ("flat" for a network's flat buffer, else a parameter
        name) to {state name ("m", "v", "h"): a copy of the array, on its device}."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "t": self.t,
            "state": {key: {n: a.copy() for n, a in zip(self.state_names, arrays)}
                      for key, arrays in self.state.items()},
        }

    def load_state_dict(self, state_dict, backend=None) -> None:
        """Restore what ``state_dict`` returned (step counter, moments, lr and the other
        hyperparameters). Arrays are copied, onto ``backend`` when given (e.g. NumPy arrays
        read from a file for a network on CuPy). Everything is checked before anything is
        changed: ValueError/TypeError name the problem."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        missing = {"type", "hyperparameters", "t", "state"} - set(state_dict)
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}")
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is of optimizer {state_dict['type']!r}, "
                             f"this one is {type(self).__name__!r}")
        hp = state_dict["hyperparameters"]
        names = set(self.hyperparameters())
        if isinstance(hp, dict):
            hp = {**{k: v for k, v in HYPERPARAMETERS_ADDED.items() if k in names}, **hp}
        if not isinstance(hp, dict) or set(hp) != names:
            raise ValueError(f"state_dict hyperparameters must name exactly {sorted(names)}, "
                             f"got {hp!r}")
        fresh = type(self)(**hp)  # the constructor's checks, with the argument's name
        t = state_dict["t"]
        checks.integer("state_dict t (steps taken)", t, low=0)
        if not isinstance(state_dict["state"], dict):
            raise TypeError("state_dict state must be a dict of buffer key -> {name: array}")
        state = {}
        for key, arrays in state_dict["state"].items():
            if not isinstance(arrays, dict) or set(arrays) != set(self.state_names):
                raise ValueError(f"state_dict state[{key!r}] must hold {list(self.state_names)}"
                                 f", got {arrays!r:.200}")
            out = []
            for n in self.state_names:
                a = arrays[n]
                if not hasattr(a, "dtype"):
                    raise TypeError(f"state_dict state[{key!r}][{n!r}] must be an array, got "
                                    f"{type(a).__name__}")
                a = get_backend(backend).asarray(a) if backend is not None else a.copy()
                if a.dtype.kind != "f":
                    raise TypeError(f"state_dict state[{key!r}][{n!r}] must be a float array, "
                                    f"got dtype {a.dtype}")
                if out and (a.shape != out[0].shape or a.dtype != out[0].dtype):
                    raise ValueError(f"state_dict state[{key!r}] arrays differ in shape/dtype")
                old = self.state.get(key)
                if old is not None and (a.shape != old[0].shape or a.dtype != old[0].dtype):
                    raise ValueError(f"state_dict state[{key!r}][{n!r}] is {a.dtype} {a.shape},"
                                     f" this optimizer's is {old[0].dtype} {old[0].shape}")
                if a is arrays[n]:
                    a = a.copy()
                out.append(a)
            state[key] = tuple(out)
        for k in names:
            setattr(self, k, getattr(fresh, k))
        self.t = int(t)
        self.state = state

    def scalars(self) -> tuple:
        """The rule's scalar arguments for step ``self.t`` (after the arguments p, g, state)."""
        raise NotImplementedError

    def update(self, params, grads, record=None) -> None:
        """One step: params ← rule(params, grads), in place (the fused kernel or the
        reference, as ``accel.dispatch`` decides); nothing changes where the non-finite
        guard's ``record`` (a device array) marks the step bad."""
        pairs = self._pairs(params, grads)
        self.t += 1
        if not pairs:
            return
        scalars = self.scalars()
        applied = 0
        try:
            clip = self._clip_factor(pairs)
            for key, p, g, decayed in pairs:
                state = self.state.get(key)
                if state is None:
                    xp = array_module(p)
                    state = self.state[key] = tuple(xp.zeros_like(p)
                                                    for _ in self.state_names)
                site = self._sites.get(key)
                if site is None:
                    site = self._sites[key] = dispatch.Site(type(self).rule, _arg_names(
                        type(self).rule, key, len(state)))
                site(p, g, *state, clip, scalars=(*scalars, decayed), record=record)
                applied += 1
        except BaseException:
            if not applied:  # refused before anything changed: no step taken
                self.t -= 1
            raise

    def _pairs(self, params, grads):
        """``_pairs``, checked once for a network's FlatDicts: the same dicts, with the same
        flat buffers, names and mask, make the same one pair at the next step."""
        last = self._flat_pair
        if last is not None and last[0] is params and last[1] is grads and \
                last[2] is self.decay_mask and last[3] is params.flat and \
                last[4] is grads.flat and len(params) == last[5] == len(grads):
            return last[6]
        pairs = _pairs(params, grads, self.decay_mask)
        if len(pairs) == 1 and pairs[0][0] == "flat":
            self._flat_pair = (params, grads, self.decay_mask, params.flat, grads.flat,
                               len(params), pairs)
        return pairs

    def _clip_factor(self, pairs):
        """The clip array the rules read, on the gradients' device: factor 1 without
        clipping; with ``clip_norm``, clip[0] written on the device by one ``clip_factor``
        call per gradient buffer (the last call decides)."""
        g0 = pairs[0][2]
        clip = self._clip
        if clip is None or type(clip) is not type(g0):
            clip = self._clip = F.clip_array(g0)
        if self._clip_norm is not None:
            last = len(pairs) - 1
            for k, (key, _, g, _) in enumerate(pairs):
                site = self._clip_sites.get(key)
                if site is None:
                    where = "" if key == "flat" else f"[{key!r}]"
                    site = self._clip_sites[key] = dispatch.Site(F.clip_factor, (
                        f"grads{where}", "clip", "clip_norm", "eps", "last"))
                site(g, clip, scalars=(self._clip_norm, F.CLIP_EPS, k == last))
        return clip

    def skipped(self, n: int) -> None:
        """``n`` of the updates counted in ``t`` were skipped on the device (the guard's
        record says so when the host reads it): ``t`` counts the applied ones again."""
        self.t -= int(n)


def _arg_names(rule, key, n_state):
    """The names errors use for the rule's arguments: params[key], grads[key], state."""
    where = "" if key == "flat" else f"[{key!r}]"
    params = list(inspect.signature(rule).parameters)
    names = [f"params{where}", f"grads{where}", *(f"state[{k}]" for k in range(n_state))]
    return (*names, *params[len(names):])


def _pairs(params, grads, mask):
    """[(key, param, grad, decayed)]: one pair of flat buffers when both have ``.flat`` and
    the same names (and the arrays ``mask`` decays are a leading block of it), else one pair
    per name. Names, shapes and dtypes must match. ``decayed``: how many leading elements of
    the param weight decay applies to (``accel.decay_mask``)."""
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise TypeError(f"params and grads must be dicts of arrays, got {type(params).__name__}"
                        f" and {type(grads).__name__}")
    if params.keys() != grads.keys():
        raise ValueError(f"params and grads have different names: {sorted(params, key=str)} "
                         f"vs {sorted(grads, key=str)}")
    pf, gf = getattr(params, "flat", None), getattr(grads, "flat", None)
    if pf is not None and gf is not None and pf.shape == gf.shape and pf.dtype == gf.dtype:
        decayed = flat_block(params, mask)
        if decayed is not None:
            return [("flat", pf, gf, decayed)]
    names = decayed_names(params, mask)
    out = []
    for k, p in params.items():
        g = grads[k]
        for name, a in (("params", p), ("grads", g)):
            if not (hasattr(a, "shape") and hasattr(a, "dtype")) or np.isscalar(a):
                raise TypeError(f"{name}[{k!r}] must be an array, got {a!r:.100}")
        if p.shape != g.shape or p.dtype != g.dtype:
            raise ValueError(f"grads[{k!r}] has shape {g.shape} {g.dtype}, "
                             f"params[{k!r}] has {p.shape} {p.dtype}")
        if p.dtype.kind != "f":
            raise TypeError(f"params[{k!r}] must be a float array, got dtype {p.dtype}")
        if not getattr(getattr(p, "flags", None), "writeable", True):
            raise ValueError(f"params[{k!r}] is read-only; it is updated in place and must be "
                             "writable")
        out.append((k, p, g, p.size if k in names else 0))
    return out


class SGD(Optimizer):
    """W ← W − lr·∂L/∂W."""

    rule = F.sgd

    def scalars(self):
        return (self.lr, self.weight_decay)


class Momentum(Optimizer):
    """v ← μ·v + (1 − dampening)·g; W ← W − lr·v (dampening=μ: the course's EMA form)."""

    rule = F.momentum
    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0,
                 decay_mask="weights", clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.momentum = checks.in_unit_interval("momentum", momentum)
        self.dampening = float(checks.in_unit_interval("dampening", dampening))

    def scalars(self):
        return (self.lr, self.momentum, self.dampening, self.weight_decay)


class Nesterov(Optimizer):
    """Nesterov momentum: W ← W + μ²·v − (1 + μ)·lr·g with the previous v, then
    v ← μv − lr·g (the book's code since 2021 = torch.optim.SGD(nesterov=True))."""

    rule = F.nesterov
    state_names = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, weight_decay=0.0, decay_mask="weights",
                 clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.momentum = checks.in_unit_interval("momentum", momentum)

    def scalars(self):
        return (self.lr, self.momentum, self.weight_decay)


class AdaGrad(Optimizer):
    """h ← h + g²; W ← W − lr·g / (√h + ε) (the book's ε = 1e-7)."""

    rule = F.adagrad
    state_names = ("h",)

    def __init__(self, lr=0.01, eps=1e-7, weight_decay=0.0, decay_mask="weights",
                 clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.eps = checks.positive("eps", eps)

    def scalars(self):
        return (self.lr, self.eps, self.weight_decay)


class RMSProp(Optimizer):
    """h ← ρh + (1 − ρ)g²; W ← W − lr·g / (√h + ε) (the book's ρ = 0.99, ε = 1e-7)."""

    rule = F.rmsprop
    state_names = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-7, weight_decay=0.0,
                 decay_mask="weights", clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.decay_rate = checks.in_unit_interval("decay_rate", decay_rate)
        self.eps = checks.positive("eps", eps)

    def scalars(self):
        return (self.lr, self.decay_rate, self.eps, self.weight_decay)


class AdaDelta(Optimizer):
    """AdaDelta (Zeiler 2012), as torch.optim.Adadelta: h ← ρh + (1 − ρ)g²;
    Δ = √(u + ε)/√(h + ε)·g; u ← ρu + (1 − ρ)Δ²; W ← W − lr·Δ (torch's lr 1.0, ρ 0.9,
    ε 1e-6; DeZero's AdaDelta is lr 1 with ρ 0.95)."""

    rule = F.adadelta
    state_names = ("h", "u")

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, decay_mask="weights",
                 clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.rho = checks.in_unit_interval("rho", rho)
        self.eps = checks.positive("eps", eps)

    def scalars(self):
        return (self.lr, self.rho, self.eps, self.weight_decay)


class Adam(Optimizer):
    """Adam with bias-corrected moments, as torch.optim.Adam:
    m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ), W ← W − lr·m̂/(√v̂ + ε).

    folded=True gives the book's form, W ← W − lr·√(1 − β2ᵗ)/(1 − β1ᵗ)·m/(√v + ε), which
    differs only in where ε sits (the book also uses ε = 1e-7).
    """

    rule = F.adam
    state_names = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 folded=False, decay_mask="weights", clip_norm=None):
        super().__init__(lr, weight_decay, decay_mask, clip_norm)
        self.beta1 = checks.in_unit_interval("beta1", beta1)
        self.beta2 = checks.in_unit_interval("beta2", beta2)
        self.eps = checks.positive("eps", eps)
        self.folded = checks.boolean("folded", folded)

    def _decay(self):
        """(coupled L2 weight decay, decoupled shrink factor)."""
        return self.weight_decay, 1.0

    def scalars(self):
        wd, shrink = self._decay()
        return (self.beta1, self.beta2, self.eps, self.lr, self.t, self.folded, wd, shrink)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW):
    W ← W·(1 − lr·weight_decay), then the Adam step, on the parameters ``decay_mask`` names
    (a network's weight matrices by default; every array of a plain dict, as torch's)."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 folded=False, decay_mask="weights", clip_norm=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, folded, decay_mask, clip_norm)

    def _decay(self):
        return 0.0, 1.0 - self.lr * self.weight_decay


OPTIMIZERS = {cls.__name__.lower(): cls for cls in
              (SGD, Momentum, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW)}


def get_optimizer(name: str, **kwargs) -> Optimizer:
    """An optimizer by name ("sgd", "momentum", "nesterov", "adagrad", "rmsprop",
    "adadelta", "adam", "adamw"), e.g. ``get_optimizer("adam", lr=1e-3)``."""
    return OPTIMIZERS[checks.one_of("optimizer", name, OPTIMIZERS)](**kwargs)
