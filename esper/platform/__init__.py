"""The runtime around organisms: run directories (Ray replica actors, the central learner, Tune
trainables and MLflow tracking land here with the platform work).

Everything below this package (policies, workloads, events) runs in one plain process and never
imports Ray.
"""
