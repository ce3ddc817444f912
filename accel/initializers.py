"""Weight initial scales: W ~ N(0, std²) with std from a number or a named rule.

=============  ======================  ===========================================
name           std                     source
=============  ======================  ===========================================
"xavier"       √(1/n_in)               the book's "Xavier" (alias "sigmoid")
"glorot"       √(2/(n_in + n_out))     Glorot & Bengio 2010, PyTorch xavier_normal_
"he"           √(2/n_in)               He et al. 2015 (alias "relu")
a float        that number             e.g. 0.01, the book's small random init
=============  ======================  ===========================================
"""

from __future__ import annotations

import math
import numbers

from . import checks

RULES = {
    "xavier": lambda n_in, n_out: math.sqrt(1.0 / n_in),
    "glorot": lambda n_in, n_out: math.sqrt(2.0 / (n_in + n_out)),
    "he": lambda n_in, n_out: math.sqrt(2.0 / n_in),
}
ALIASES = {"sigmoid": "xavier", "relu": "he"}


def weight_std(weight_init, n_in: int, n_out: int) -> float:
    """The standard deviation for a (n_in, n_out) weight matrix."""
    checks.integer("n_in", n_in, low=1)
    checks.integer("n_out", n_out, low=1)
    if isinstance(weight_init, numbers.Real) and not isinstance(weight_init, bool):
        return checks.number("weight_init std", weight_init, low=0)
    if isinstance(weight_init, str):
        key = ALIASES.get(weight_init.lower(), weight_init.lower())
        if key in RULES:
            return RULES[key](n_in, n_out)
    names = sorted([*RULES, *ALIASES])
    raise ValueError(f"weight_init={weight_init!r} is not a number or one of {names}")


def init_weight(rng, weight_init, n_in: int, n_out: int, dtype):
    """A (n_in, n_out) array drawn from N(0, std²) with ``rng`` (a backend generator)."""
    if not callable(getattr(rng, "standard_normal", None)):
        raise TypeError(f"rng must be a random generator (numpy.random.default_rng(seed), or "
                        f"a backend's rng(seed)), got {rng!r:.100}")
    dtype = checks.floating_dtype("dtype", dtype)
    std = weight_std(weight_init, n_in, n_out)
    try:
        w = rng.standard_normal((n_in, n_out), dtype=dtype)
    except (ValueError, MemoryError) as exc:
        raise ValueError(f"a weight matrix of n_in={n_in} by n_out={n_out} does not fit in "
                         f"memory ({exc})") from None
    return w * dtype.type(std)
