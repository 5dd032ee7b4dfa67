"""The runtime around organisms: the crash-safe event-log writer and run directories.

Ray replica actors, the central learner, Tune trainables and MLflow tracking land here with the
platform work; everything below this package runs in one plain process.
"""
