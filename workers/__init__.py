"""Production jobs beside the stream: canary probes and the quarterly cycle (dataset
assembly, retraining, the gate's traffic sample). Releasing a model lives in
``l2loop.release``, demo load in ``l2loop.demo``."""
