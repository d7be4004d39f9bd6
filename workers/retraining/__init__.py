"""The parts of a retraining run (``l2loop.workers.retrain``): the dataset it reads, how a
candidate is trained, and the report it leaves."""
