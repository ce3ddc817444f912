"""Which parameters weight decay applies to: one rule for the network's L2 term
(``MultiLayerNet(weight_decay=)``), every optimizer's coupled ``weight_decay`` and AdamW's
decoupled decay.

A mask is one of

- ``"weights"`` (the default): the weight matrices only, the book's ½λΣW² and the course's
  λ/(2m)·ΣW² (no decay on biases, γ, β). Which arrays are weight matrices comes from the
  container: a network's ``params`` (a ``FlatDict``) declare theirs (``params.weights``, laid
  out first in the flat buffer: ``params.flat[:params.n_weights]``); a plain dict declares
  none, so every array in it decays, as in ``torch.optim`` (``AdamW().update({"W": ...,
  "b": ...}, ...)`` is torch's AdamW step);
- ``"all"``: every parameter (PyTorch's default; for equivalence tests);
- a collection of names: exactly those arrays.

A kernel decays the first ``decayed`` elements of the buffer it updates (the weights come
first in a network's flat buffer), so a step stays one call over the whole model;
``flat_block`` gives that count, ``decays`` the verdict for one named array.
"""

from __future__ import annotations

MASKS = ("weights", "all")


def check(mask):
    """``"weights"``, ``"all"`` or a tuple of names (from any collection of strings)."""
    if isinstance(mask, str):
        key = mask.lower()
        if key not in MASKS:
            raise ValueError(f"decay_mask={mask!r} is not one of {list(MASKS)} or a collection "
                             "of parameter names")
        return key
    try:
        names = list(mask)
    except TypeError:
        raise TypeError(f"decay_mask must be 'weights', 'all' or a collection of parameter "
                        f"names, got {mask!r}") from None
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"decay_mask names must be strings, got {mask!r}")
    return tuple(sorted(set(names)))


def decayed_names(params, mask) -> set:
    """The names of ``params`` (a dict of arrays) that ``mask`` decays; a name of the mask
    that ``params`` lacks is a ValueError."""
    if mask == "all":
        return set(params)
    if mask == "weights":
        declared = getattr(params, "weights", None)
        return set(params) if declared is None else set(declared)
    missing = sorted(set(mask) - set(params))
    if missing:
        raise ValueError(f"decay_mask names {missing}, which are not among the parameters "
                         f"{sorted(params)}")
    return set(mask)


def decays(params, name, mask) -> bool:
    """Whether weight decay applies to ``params[name]``."""
    return name in decayed_names(params, mask)


def flat_block(params, mask) -> int | None:
    """For a ``FlatDict``: the count of leading elements of ``params.flat`` that ``mask``
    decays (0: none), or None when the decayed arrays are not a leading block of the buffer
    (then each array is updated on its own)."""
    if mask == "all":
        return params.flat.size
    if mask == "weights" and getattr(params, "weights", None) is not None:
        return params.n_weights
    names = decayed_names(params, mask)
    offsets = params.offsets()
    end = 0
    for (_, stop), name in sorted((offsets[k], k) for k in params):
        if name not in names:
            break
        end = stop
    return end if sum(params[k].size for k in names) == end else None
