"""Simulated traffic and simulated users: the demo load of ``l2loop up``, the spike, the
reporters, and the replay of labelled prompt files through the loop. Nothing here runs in
production; production jobs live in ``l2loop.workers``, agents in ``l2loop.streams``."""
