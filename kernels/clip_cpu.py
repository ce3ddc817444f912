"""Gradient-norm clipping's factor on the CPU, in one call (the reference:
``accel.functional.clip_factor``).

``clip_factor(g, clip, max_norm, eps, last, part, ticket)``: clip[1] ← clip[1] + Σg², and
when ``last``, clip[0] ← min(1, max_norm/(√clip[1] + eps)) and clip[1] ← 0. The optimizer kernels
read clip[0]; nothing goes back to the host. Σg² is taken in float64 over contiguous chunks
of g (at least CHUNK elements each, at most ``part.size`` chunks), each chunk in vector lanes
(``cpu_jit.jit_sum``), then the chunks' sums in chunk order: the split depends on g's size
only, so the factor does not depend on the number of threads (the serial twin gives the same
bits). ``part`` holds the chunks' sums; ``ticket`` is the CUDA twin's workspace (unused here).
"""

import math

from numba import float64, prange

from .cpu_jit import jit_sum, serial_twins

CHUNK = 1 << 14  # at least this many elements per parallel chunk


@jit_sum
def clip_factor(g, clip, max_norm, eps, last, part, ticket):
    n = g.size
    nc = max(1, min(n // CHUNK, part.size))
    for c in prange(nc):
        chunk = g[c * n // nc:(c + 1) * n // nc]  # a view: indices ≥ 0, so the loop vectorizes
        s = 0.0
        for i in range(chunk.size):
            x = float64(chunk[i])  # squares in float64, as the reference's
            s += x * x
        part[c] = s
    total = clip[1]
    for c in range(nc):
        total += part[c]
    if last:
        factor = max_norm / (math.sqrt(total) + eps)
        clip[0] = 1.0 if factor > 1.0 else factor  # NaN stays NaN, as torch's clamp
        clip[1] = 0.0
    else:
        clip[1] = total


KERNELS = {"clip_factor": clip_factor}
SERIAL = serial_twins(KERNELS)
