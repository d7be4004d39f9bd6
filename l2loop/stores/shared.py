"""The shared state of a deployment, opened from the settings: one storage (a directory, or
an S3 bucket: l2model.storage) for the curated store, the datasets and the model registry."""

from __future__ import annotations

from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2model.registry import ModelRegistry
from l2model.storage import LocalStorage, ObjectStorage, S3Config, Storage

# Prefixes in a bucket; locally the same names under the data directory.
REGISTRY_PREFIX = "models/registry"


def shared_storage(settings: Settings) -> Storage:
    if settings.store_url is None:
        return LocalStorage(settings.data_dir)
    secret = settings.s3_secret_access_key
    return ObjectStorage(
        S3Config(
            url=settings.store_url,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=None if secret is None else secret.get_secret_value(),
            unsigned=settings.s3_unsigned,
        )
    )


def curated_store(settings: Settings) -> CuratedStore:
    return CuratedStore(shared_storage(settings), hash_unflagged=settings.hash_unflagged_texts)


def model_registry(settings: Settings) -> ModelRegistry:
    """Versions in the bucket (fetched into this machine's cache to run), or in the local
    registry directory (``registry_root``, run in place)."""
    if settings.store_url is None:
        return ModelRegistry.in_directory(settings.registry_root)
    cache = settings.data_dir / "models" / "cache"
    return ModelRegistry(shared_storage(settings), prefix=REGISTRY_PREFIX, cache_dir=cache)
