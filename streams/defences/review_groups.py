"""Review groups: quarantined reports a person decides at once (decision 0020).

A reviewer reads a text and judges a claim about it; reports making the same claim about the
same text, or about texts a few words apart, get the same judgement. ``group_reports`` groups
whatever is pending, and is pure: the review queue (``review.ReviewQueue``) holds the reports,
``l2loop review`` and the loop replay group them when they read them.

- Same normalised text first (``l2model.record.text_key``, the report's ``example_id``),
  then semantic neighbours: the cosine of character 3-5-gram TF-IDF vectors, fitted on the
  distinct pending texts, at least ``L2LOOP_REVIEW_GROUP_SIMILARITY``. Character n-grams
  within words see through a changed name, number or typo, and need no model.
- Leader clustering, not single linkage: the largest set of identical texts (then the
  oldest) leads, and takes every text close enough to itself; so every member is close to
  the leader a reviewer reads, where single linkage could chain A to B to C with C nothing
  like A.
- Never mixed: one report kind (a false-positive claim and a missed-attack claim on similar
  texts ask for opposite judgements) and one quarantine reason (each asks a different
  question) per group.
- Across tenants: an operator reviews every tenant's queue, so a group may hold reports of
  several tenants; each member keeps its tenant, is listed with it, and is curated as its own
  tenant's report.
- The id names the members (a short hash of their report keys): a decision on a group
  applies to exactly the reports listed, and a group that gained or lost a member since has
  another id, so nobody releases a report they were not shown.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from l2loop.schemas.reports import QuarantinedReport, QuarantineReason, ReportKind
from l2loop.streams.defences.admission import report_key

# 48 bits: a collision among the groups of one queue is out of reach, and a person can type it.
GROUP_ID_CHARS: Final = 12
PREVIEW_CHARS: Final = 160
# Rows of the similarity matrix computed at once: 256 rows of as many floats as distinct texts
# (8 MB for 4,000 texts), instead of the whole square.
_BLOCK: Final = 256

# A distinct text under one claim: kind, quarantine reason, text key.
TextKey = tuple[ReportKind, QuarantineReason, str]


def _member_order(item: QuarantinedReport) -> tuple[datetime, str, str]:
    return item.quarantined_at, item.report.tenant_id, item.report.report_id


def group_id(members: Sequence[QuarantinedReport]) -> str:
    """The id of a group with these members, whatever their order."""
    keys = sorted(report_key(m.report.tenant_id, m.report.report_id) for m in members)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:GROUP_ID_CHARS]


@dataclass(frozen=True, slots=True)
class ReviewGroup:
    """Quarantined reports of one kind and reason on the same or neighbouring texts; the
    leader, whose text the others are close to, first."""

    group_id: str
    kind: ReportKind
    reason: QuarantineReason
    members: tuple[QuarantinedReport, ...]

    @property
    def leader(self) -> QuarantinedReport:
        return self.members[0]

    @property
    def size(self) -> int:
        return len(self.members)

    def tenants(self) -> dict[str, int]:
        """Reports per tenant, by tenant id."""
        return dict(sorted(Counter(m.report.tenant_id for m in self.members).items()))

    def score_range(self) -> tuple[float, float] | None:
        """The lowest and highest model score of the members (None: none was scored, as
        an unverified missed-attack claim is not)."""
        scores = [m.verdict.score for m in self.members if m.verdict is not None]
        return (min(scores), max(scores)) if scores else None

    def preview(self) -> str:
        """The leader's text on one line, cut at PREVIEW_CHARS."""
        text = " ".join(self.leader.text.split())
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _neighbours(vectors: Any, similarity: float) -> list[np.ndarray]:
    """For each row, the rows whose cosine with it reaches ``similarity`` (TF-IDF rows are
    L2-normalised: the dot product is the cosine), ascending."""
    near: list[np.ndarray] = []
    for start in range(0, vectors.shape[0], _BLOCK):
        block = (vectors[start : start + _BLOCK] @ vectors.T).toarray()
        near.extend(np.flatnonzero(row >= similarity) for row in block)
    return near


def group_reports(items: Sequence[QuarantinedReport], *, similarity: float) -> list[ReviewGroup]:
    """``items`` in review groups, largest first (then the oldest leader, then the id). In a
    group, the reports of the leader's text come first, then those of each neighbouring text
    (most reported first), each text's oldest first. The same items give the same groups and
    ids in any order."""
    texts: dict[TextKey, list[QuarantinedReport]] = {}
    for item in sorted(items, key=_member_order):
        texts.setdefault((item.report.kind, item.reason, item.example_id), []).append(item)
    if not texts:
        return []
    keys = list(texts)
    # Each distinct text counts once, so that a text reported a hundred times does not make
    # its own n-grams look common.
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5))
    vectors = vectorizer.fit_transform([texts[key][0].text for key in keys]).tocsr()
    row = {key: index for index, key in enumerate(keys)}
    partitions: dict[tuple[ReportKind, QuarantineReason], list[TextKey]] = {}
    for key in keys:
        partitions.setdefault(key[:2], []).append(key)
    groups = []
    for (kind, reason), part in partitions.items():
        part.sort(key=lambda key: (-len(texts[key]), _member_order(texts[key][0])))
        near = _neighbours(vectors[[row[key] for key in part]], similarity)
        taken = np.zeros(len(part), dtype=bool)
        for leader in range(len(part)):
            if taken[leader]:
                continue
            joined = [leader, *(j for j in near[leader] if not taken[j] and j != leader)]
            taken[joined] = True
            members = tuple(item for j in joined for item in texts[part[j]])
            groups.append(ReviewGroup(group_id(members), kind, reason, members))
    return sorted(groups, key=lambda g: (-g.size, _member_order(g.leader), g.group_id))


def find_group(groups: Sequence[ReviewGroup], wanted: str) -> ReviewGroup | None:
    return next((group for group in groups if group.group_id == wanted), None)
