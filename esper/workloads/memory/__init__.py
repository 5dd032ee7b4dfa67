"""The organism's data side: a replay buffer co-evolving with the topology.

:mod:`~esper.workloads.memory.selection` holds the rules that decide which samples a buffer
keeps, :mod:`~esper.workloads.memory.replay` the buffer and its replay into training,
:mod:`~esper.workloads.memory.retention` synchronized retention (the weights serving rare
samples and those samples kept together), and :mod:`~esper.workloads.memory.data_side` the
organism's use of both, with the data side's events.
"""

from esper.workloads.memory.data_side import DataSide, check_config
from esper.workloads.memory.replay import DataAction, Memory, Refresh
from esper.workloads.memory.retention import Guarded, Retention, Serving
from esper.workloads.memory.selection import SELECTIONS, Candidates, Selection, make_selection

__all__ = [
    "SELECTIONS",
    "Candidates",
    "DataAction",
    "DataSide",
    "Guarded",
    "Memory",
    "Refresh",
    "Retention",
    "Selection",
    "Serving",
    "check_config",
    "make_selection",
]
