"""Pydantic v2 models for everything that crosses a topic, an HTTP boundary or Redis."""

from l2loop.schemas.dead_letters import DeadLetter, DeadLetterReason
from l2loop.schemas.events import GroundTruth, L1Hit, L1Summary, ScanEvent
from l2loop.schemas.verdicts import Action, StoredVerdict, Verdict

__all__ = [
    "Action",
    "DeadLetter",
    "DeadLetterReason",
    "GroundTruth",
    "L1Hit",
    "L1Summary",
    "ScanEvent",
    "StoredVerdict",
    "Verdict",
]
