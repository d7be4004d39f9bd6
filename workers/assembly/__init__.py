"""The parts of a dataset assembly (``l2loop.workers.assembler``): the period, the scan and
resolution of the curated store, balancing and splitting, the manifest, durable writes."""
