"""Emergent-strategy detectors: find in a run's event log what the immune system learned.

Each detector is a function ``(events, metrics, **params) -> pandas.DataFrame`` returning one
row per detected episode with its evidence columns (replica keys first: ``run_id``,
``trial_id``, ``replica_id``, or the hive partitions ``trial``/``replica`` when the ids are
absent). They are registered in :data:`DETECTORS` under the names of the strategies of the
design's "Emergent strategies" section:

* ``lazarus``: τ/turnover burst, accuracy drop, recovery above the old level (net gain).
* ``breathing``: periodic active-parameter count and its correlation with novelty.
* ``ghost``: regrowth, when a distribution returns, of the weights active when it was last seen.
* ``flipflop``: prune → regrow → prune of the same weights within a window, per layer.
* ``retention``: high-Fisher layers spared from pruning while the replica is under pressure.
* ``double_loss``: the data side's weight-level retention: weights protected because they
  serve tail samples, tail samples kept because of those weights, and double-loss cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from esper.analysis.detectors.breathing import breathing
from esper.analysis.detectors.double_loss import double_loss
from esper.analysis.detectors.flipflop import flipflop, flipflop_offenders
from esper.analysis.detectors.ghost import ghost
from esper.analysis.detectors.lazarus import lazarus
from esper.analysis.detectors.retention import retention
from esper.registry import Registry, UnknownNameError, build

__all__ = [
    "DETECTORS",
    "Detector",
    "breathing",
    "detect_all",
    "double_loss",
    "flipflop",
    "flipflop_offenders",
    "ghost",
    "lazarus",
    "retention",
]

Detector = Callable[..., pd.DataFrame]
"""``(events, metrics, **params) -> episodes``."""

DETECTORS: Registry[Detector] = Registry("detector")
for _name, _fn in (
    ("lazarus", lazarus),
    ("breathing", breathing),
    ("ghost", ghost),
    ("flipflop", flipflop),
    ("retention", retention),
    ("double_loss", double_loss),
):
    DETECTORS.register(_name)(_fn)


def detect_all(
    events: pd.DataFrame, metrics: pd.DataFrame, **params: Mapping[str, Any]
) -> dict[str, pd.DataFrame]:
    """Run every registered detector.

    Args:
        events: The ``events`` table as a DataFrame.
        metrics: The ``metrics`` table as a DataFrame (may be empty).
        **params: Per-detector parameters keyed by detector name, e.g.
            ``detect_all(ev, mt, ghost={"period": 3}, lazarus={"window": 10})``.

    Returns:
        ``{detector name: episodes}`` for every registered detector, in name order.

    Raises:
        UnknownNameError: a key of ``params`` is not a detector.
        InvalidParameterError: a detector was given a parameter it does not declare.
    """
    for name in params:
        if name not in DETECTORS:
            raise UnknownNameError("detector", name, DETECTORS.names())
    return {
        name: build(
            DETECTORS[name],
            dict(params.get(name, {})),
            f"detector {name!r}",
            fixed={"events": events, "metrics": metrics},
        )
        for name in DETECTORS
    }
