"""Model artifacts shipped with the package."""

from pathlib import Path


def default_model_dir() -> Path:
    """The committed ``lite`` model that scorers use out of the box."""
    return Path(__file__).resolve().parent / "lite"
