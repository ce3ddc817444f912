"""The flat parameter buffer: named arrays that are views into one contiguous 1-D array.

A network keeps all its parameters in one ``FlatDict`` and their gradients in a twin, so an
optimizer step is one pass (one kernel call) over ``flat``, and gradient checking perturbs
the same θ vector the optimizer updates.
"""

from __future__ import annotations

import math


class FlatDict(dict):
    """A dict of name → view into ``self.flat`` (a contiguous 1-D array).

    Assigning to an existing name copies into its view, so the link to ``flat`` is never
    lost (``params["W1"] = W`` behaves like ``params["W1"][...] = W``). ``weights``: the names
    of the weight matrices, which ``allocate`` lays out first, in ``flat[:n_weights]`` (None:
    the container declares none; see ``accel.decay_mask``).
    """

    def __init__(self, flat, views, weights=None, n_weights=None):
        super().__init__(views)
        self.flat = flat
        self.weights, self.n_weights = weights, n_weights

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"{key!r} is not one of this flat buffer's names {list(self)}")
        view = dict.__getitem__(self, key)
        if getattr(value, "shape", view.shape) != view.shape:
            raise ValueError(f"{key} must have shape {view.shape}, got {value.shape}")
        view[...] = value

    def offsets(self) -> dict:
        """name → (start, stop) of its view inside ``flat``."""
        base = _address(self.flat)
        item = self.flat.itemsize
        out = {}
        for k, v in self.items():
            start = (_address(v) - base) // item
            out[k] = (start, start + v.size)
        return out


def _address(a) -> int:
    data = getattr(a, "data", None)
    if hasattr(data, "ptr"):  # cupy
        return data.ptr
    return a.__array_interface__["data"][0]


def allocate(xp, shapes: dict, dtype, layout=None, weights=None) -> FlatDict:
    """A zeroed FlatDict with a view of each shape; ``layout`` orders the names in ``flat``.

    The dict keeps the order of ``shapes``; ``flat`` stores the names in ``layout`` order
    (default the same), so a group such as all weight matrices can be one contiguous slice.
    ``weights`` names the weight matrices, which must come first in ``layout``.
    """
    layout = list(shapes) if layout is None else list(layout)
    if sorted(layout) != sorted(shapes):
        raise ValueError(f"layout {layout} must name each of {list(shapes)} once")
    n_weights = None
    if weights is not None:
        weights = tuple(weights)
        if sorted(layout[:len(weights)]) != sorted(weights):
            raise ValueError(f"the weights {list(weights)} must come first in layout {layout}")
        n_weights = sum(math.prod(shapes[k]) for k in weights)
    sizes = {k: math.prod(shapes[k]) for k in layout}
    flat = xp.zeros(sum(sizes.values()), dtype=dtype)
    views, start = {}, 0
    for k in layout:
        views[k] = flat[start:start + sizes[k]].reshape(shapes[k])
        start += sizes[k]
    return FlatDict(flat, {k: views[k] for k in shapes}, weights, n_weights)
