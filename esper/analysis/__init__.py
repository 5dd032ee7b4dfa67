"""Event-log reader, strategy detectors, comparisons and reports.

Torch-free and Hydra-free: a notebook on a laptop reads a cluster's logs with pyarrow, DuckDB
and pandas alone (``tests/analysis/test_imports.py`` checks it in a fresh interpreter).
"""

from esper.analysis.event_log import EventLog

__all__ = ["EventLog"]
