"""Model artifacts shipped with the package."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def default_model_dir() -> Path:
    """The committed model that scorers use out of the box: ``fast``, the lite model's
    function computed in time proportional to the prompt (``l2model.fast``)."""
    return default_fast_dir()


def default_lite_dir() -> Path:
    """The committed ``lite`` model, built by ``python -m l2model.lite``."""
    return _HERE / "lite"


def default_fast_dir() -> Path:
    """The committed ``fast`` model, built from ``lite`` by ``python -m l2model.fast``."""
    return _HERE / "fast"
