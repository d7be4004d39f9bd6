"""Scheduled and background jobs around the stream: traffic, canaries, dataset assembly."""
