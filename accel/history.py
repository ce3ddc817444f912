"""History: what a training run recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class History:
    """Loss per iteration; accuracies and lr per evaluation.

    ``epoch[i]`` is the (possibly fractional, when stopped by ``max_iterations``) epoch at
    which ``train_acc[i]``, ``val_acc[i]`` and ``test_acc[i]`` were measured (each list is
    empty when that data was not given); index 0 is before training. ``train_loss[k]`` is
    the loss of iteration k+1's mini-batch, computed in its forward pass, before that
    iteration's update. ``lr[i]`` is the lr of the last step before evaluation i (at index
    0, of the first step). A run ended by an ``on_evaluate`` hook (``accel.EarlyStopping``)
    records why in ``stop_reason`` and the epoch in ``stopped_epoch`` (both None otherwise).
    """

    train_loss: list = field(default_factory=list)
    epoch: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    iterations: int = 0
    elapsed_s: float = 0.0
    skipped_steps: int = 0  # steps not applied because of NaN/Inf (on_nonfinite="skip")
    skipped: list = field(default_factory=list)  # their iteration numbers (1-based)
    stop_reason: str | None = None  # why an on_evaluate hook (EarlyStopping) ended the run
    stopped_epoch: float | None = None  # the epoch of the evaluation that ended it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """The History ``to_dict`` described (unknown keys refused; arrays become lists)."""
        if not isinstance(d, dict):
            raise TypeError(f"History.from_dict needs a dict (what to_dict returns), got "
                            f"{d!r:.200}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"History.from_dict: unknown keys {sorted(unknown)}")
        out = {}
        for k, v in d.items():
            if hasattr(v, "tolist"):
                v = v.tolist()
            out[k] = list(v) if isinstance(v, (list, tuple)) else v
        return cls(**out)
