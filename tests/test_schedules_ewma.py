"""Learning-rate schedules and the exponentially weighted average."""

import math

import numpy as np
import pytest

from accel import schedules
from accel.ewma import EWMA, ewma


def test_schedule_formulas():
    assert [schedules.StepDecay(1.0, step=2, factor=0.5)(e) for e in range(5)] == \
        [1, 1, 0.5, 0.5, 0.25]
    assert schedules.ExponentialDecay(0.2)(3) == pytest.approx(0.2 * 0.95 ** 3)
    assert schedules.InverseSqrtDecay(0.3)(4) == pytest.approx(0.15)
    assert schedules.InverseSqrtDecay(0.3)(0) == pytest.approx(0.3)
    assert schedules.InverseTimeDecay(0.5, rate=1.0)(3) == pytest.approx(0.125)
    stair = schedules.StaircaseDecay(0.5, rate=1.0, interval=10)
    assert [stair(e) for e in (0, 9, 10, 19, 20)] == pytest.approx([0.5, 0.5, 0.25, 0.25,
                                                                   0.5 / 3])
    assert schedules.Constant(0.1)(100) == 0.1


def test_schedule_errors():
    with pytest.raises(ValueError, match="lr0 must be > 0"):
        schedules.ExponentialDecay(0)
    with pytest.raises(ValueError, match=r"the epoch or iteration\) must be"):
        schedules.Constant(0.1)(-1)
    with pytest.raises(ValueError, match="interval"):
        schedules.StaircaseDecay(0.1, interval=0)


def test_ewma_matches_recurrence_and_bias_correction():
    theta = np.array([10.0, 12.0, 8.0, 11.0])
    raw = ewma(theta, beta=0.9, bias_correction=False)
    assert raw[0] == pytest.approx(1.0)  # 0.1·10: pulled toward the 0 start
    assert raw[1] == pytest.approx(0.9 * 1.0 + 0.1 * 12)
    corrected = ewma(theta, beta=0.9)
    assert corrected[0] == pytest.approx(10.0)  # the correction removes the pull
    assert corrected[1] == pytest.approx(raw[1] / (1 - 0.81))
    e = EWMA(0.9)
    assert [e.update(x) for x in theta] == pytest.approx(corrected.tolist())
    assert math.isnan(EWMA().average)


def test_ewma_constant_sequence_is_constant_after_correction():
    assert ewma(np.full(50, 3.0), beta=0.98) == pytest.approx(np.full(50, 3.0))


def test_ewma_errors():
    with pytest.raises(ValueError, match="beta"):
        ewma([1, 2], beta=1.0)
    with pytest.raises(ValueError, match="1-D"):
        ewma(np.ones((2, 2)))
