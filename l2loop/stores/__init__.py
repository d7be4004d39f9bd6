"""Stores the agents and jobs share: the curated store (day files), and in Redis the verdict
store with the seen-event index, suppressions, tenant keys, alert state and rollout state.
Below the agents and jobs, above schemas and settings; nothing here starts a process or
reads a topic."""
