"""``accel.opcount``: the counting backend under its public name; it lives in
``accel.dev.opcount`` (a measuring tool, never imported by the library). This module is that
one: ``accel.opcount is accel.dev.opcount``, the same classes and counters."""

import sys

from .dev import opcount

sys.modules[__name__] = opcount
