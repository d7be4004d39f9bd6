"""Production jobs beside the stream: canary probes and the quarterly cycle (dataset
assembly, retraining, the gate's traffic sample, promotion). Demo load lives in
``l2loop.demo``."""
