"""``promptability.metrics``: ARG and the paired bootstrap (re-exported from ``promptability.eval.metrics``).

>>> from promptability.metrics import average_relative_gain
>>> average_relative_gain({template: accuracy, ...})  # the 116 P3 held-out templates -> ARG in %
"""

from promptability.eval.metrics import (
    ARGResult,
    BootstrapResult,
    MetricsError,
    arg_breakdown,
    average_relative_gain,
    paired_bootstrap,
    relative_gain,
    resolve_groups,
)

__all__ = [
    "ARGResult",
    "BootstrapResult",
    "MetricsError",
    "arg_breakdown",
    "average_relative_gain",
    "paired_bootstrap",
    "relative_gain",
    "resolve_groups",
]
