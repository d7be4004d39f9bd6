"""l2loop: the streaming feedback loop around an L2 prompt-threat classifier."""

__version__ = "0.1.0"
