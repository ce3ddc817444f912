"""The non-finite guard's record: one int64 array on the device, written by the guard every
training step and read by the host only where it waits for the device anyway.

Slots (the host resets SKIPPED, FIRST, WHAT, the flags and the list when it reads them):

- ``SKIP``: 1 when this step's update is not applied (the optimizer kernels read it);
- ``SKIPPED``: updates skipped since the host last read the record (Adam's bias correction
  counts t − SKIPPED applied updates);
- ``FIRST``: the first iteration whose loss or gradient was not finite (0: none);
- ``WHAT``: what was not finite at FIRST: LOSS | GRADIENT | STATISTICS bits (0 with FIRST
  set: only the sum overflowed);
- ``FLAGS`` onwards: a flag per gradient block, then one per running-statistics block (at
  FIRST), then the iterations of the skipped steps, as far as the array has room.

Pure Python constants: the kernels, the reference and the host read the same layout.
"""

SKIP, SKIPPED, FIRST, WHAT, FLAGS = 0, 1, 2, 3, 4
LOSS, GRADIENT, STATISTICS = 1, 2, 4


def size(n_gradient_blocks: int, n_statistics_blocks: int, capacity: int) -> int:
    """Length of a record with these blocks and room for ``capacity`` skipped iterations."""
    return FLAGS + n_gradient_blocks + n_statistics_blocks + capacity
