"""Event-log reader, run loader, strategy detectors, comparisons and reports.

Torch-free and Hydra-free: a notebook on a laptop reads a cluster's logs with pyarrow, DuckDB
and pandas alone (``tests/analysis/test_imports.py`` checks it in a fresh interpreter).
"""

from esper.analysis.event_log import EventLog
from esper.analysis.runs import IncompleteRunWarning, Run, RunError, load_run, load_runs

__all__ = ["EventLog", "IncompleteRunWarning", "Run", "RunError", "load_run", "load_runs"]
