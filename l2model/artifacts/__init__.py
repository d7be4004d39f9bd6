"""Model artifacts shipped with the package."""

from pathlib import Path


def default_model_dir() -> Path:
    """The committed ``lite`` model that scorers use out of the box."""
    return default_lite_dir()


def default_lite_dir() -> Path:
    """The committed ``lite`` model, built by ``python -m l2model.lite``."""
    return Path(__file__).resolve().parent / "lite"
