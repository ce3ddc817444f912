"""The non-finite guard of a training step on the CPU, in one call: is the step finite, and
its record on the device (layout: ``guard_record``).

``nonfinite_guard(loss, g, g_starts, buffers, buffer_starts, saved, record, iteration,
sticky, acc, ticket)``: the step is bad when loss + Σg + Σbuffers is not finite (NaN and ±Inf
survive a sum, taken in float64), or, with ``sticky``, when an earlier step was (so nothing
moves until the host reads the record and raises). A bad step sets record[SKIP] (the
optimizer kernels then change nothing), is counted and listed, and puts the running
statistics back from ``saved``; a good step copies them into ``saved`` for the next one. At the
first bad step the record keeps what was not finite: the loss, which gradient blocks
(``g[g_starts[b]:g_starts[b + 1]]``), which running-statistics blocks. ``acc`` and ``ticket``
are the CUDA twin's workspace (unused here). The reference is
``accel.functional.nonfinite_guard``.
"""

import math

from numba import njit, prange

from .cpu_jit import jit, serial_twins
from .guard_record import FIRST, FLAGS, GRADIENT, LOSS, SKIP, SKIPPED, STATISTICS, WHAT


@njit(cache=True, error_model="numpy")
def _flag_blocks(a, starts, record, at):
    """record[at + b] = 1 for each block b of ``a`` holding NaN/Inf; True if any does."""
    found = False
    for b in range(starts.size - 1):
        for i in range(starts[b], starts[b + 1]):
            if not math.isfinite(a[i]):
                record[at + b] = 1
                found = True
                break
    return found


@jit
def nonfinite_guard(loss, g, g_starts, buffers, buffer_starts, saved, record, iteration,
                    sticky, acc, ticket):
    total = 0.0
    for i in prange(g.size):
        total += g[i]
    total += loss[0]
    for i in range(buffers.size):
        total += buffers[i]
    bad = not math.isfinite(total)
    if bad and record[FIRST] == 0:
        what = 0 if math.isfinite(loss[0]) else LOSS
        if _flag_blocks(g, g_starts, record, FLAGS):
            what |= GRADIENT
        if _flag_blocks(buffers, buffer_starts, record, FLAGS + g_starts.size - 1):
            what |= STATISTICS
        record[FIRST] = int(iteration)
        record[WHAT] = what
    if bad or (sticky and record[FIRST] != 0):
        record[SKIP] = 1
        slot = FLAGS + g_starts.size - 1 + buffer_starts.size - 1 + record[SKIPPED]
        if slot < record.size:
            record[slot] = int(iteration)
        record[SKIPPED] += 1
        for i in range(buffers.size):
            buffers[i] = saved[i]
    else:
        record[SKIP] = 0
        for i in range(buffers.size):
            saved[i] = buffers[i]


KERNELS = {"nonfinite_guard": nonfinite_guard}
SERIAL = serial_twins(KERNELS)
