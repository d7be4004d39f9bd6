"""``l2loop loop replay DATA.jsonl``: the whole loop on a user's own labelled prompts.

The file is split into a replayed half and a held-out half (``l2loop.demo.loop_replay``). Each
cycle sends the replayed half to ``scan-events`` as production traffic of one tenant, reads
its verdicts, lets simulated users report a share of the model's false positives and
analysts the same share of its misses over ``POST /v1/reports``, waits until the report
ledger accounts for every report and the curated sink has stored the curated ones, then runs
the quarterly cycle (assemble, retrain, gate, promote on accept) on the curated store, and
measures the model then in service on the held-out half. The replay promotes at once, never
through a staged rollout (``run.replay_settings`` says why).

Everything runs for real: a ``l2loop worker`` (score, report agent, curated sink) and a
``l2loop api`` as child processes, on the configured broker and Redis or on embedded ones.
A replay never touches anything else: its topics, consumer group and Redis keys (the model
pointer included) carry a prefix of its own, and its curated store, datasets, registry and
candidates live in a directory of its own under ``--out``.

FP reports on a score at or above the high-confidence bar wait in quarantine for a person
(``l2loop review``). With ``--review-share`` a simulated reviewer who knows each prompt's
label works through the quarantine's review groups each cycle, before the quarterly cycle:
largest groups first, within a daily budget of groups and a share of the held reports; it
releases what is true and discards what is not. With ``--hostile-share`` a hostile user
also reports some of the attacks the model flags confidently as false positives: those
must end discarded in review or rejected, never curated.

The command is ``run.run_replay``; beside it the replayed traffic and its verdicts
(``traffic``), the simulated reporters (``reports``) and reviewer (``review``), what a
replay records (``record``) and the table it writes (``table``).
"""
