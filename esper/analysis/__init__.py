"""Event-log reader, strategy detectors, comparisons and reports."""
