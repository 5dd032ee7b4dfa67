"""Ray runtime: replica actors, the learner, Tune trainables, event writer, MLflow."""
