"""Benchmarks behind ``esper bench``: measured side by side with the libraries we compare to."""
