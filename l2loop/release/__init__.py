"""Releasing a model: promotion (the registry pointer and the suppressions it retires) and
the staged rollout (its stages, the comparison at each, and the decisions). Used by the
score workers, which drive a rollout, and by the retraining job and the CLI, which start
one; above the stores, below the agents and jobs."""
