"""A counterfactual replay: which decisions on recent traffic would a candidate change, and
does anything explain the change?

The labelled gate (``l2model.gate.labelled``) judges a candidate on labelled data: the
dataset's test split, the golden set, the hard negatives. None of it is the traffic the model
will see, and a candidate can pass all three while it stops flagging an attack family nobody
reported, or starts flagging the ordinary prompts of a tenant that never reported anything.
Before promotion the candidate and the model in service therefore score the same bounded
sample of every tenant's recent traffic, and every decision that flips is looked at
(docs/architecture.md, "Learning does no harm"; docs/decisions/0021-counterfactual-gate.md):

- a flip on a tenant in the direction that tenant reported is *explained*: fewer flags on a
  tenant that reported false positives (a tenant may relieve itself on its own word,
  docs/architecture.md "Trust has units"), more on one that reported misses. Whether the
  candidate gave up recall there is the labelled gates' to judge (known attacks, golden set, the
  dataset's test split);
- a flagged → allowed flip elsewhere is explained only when the text's nearest reported
  text, of any tenant, is a false positive and a near neighbour: the reported pattern,
  un-flagged wherever it occurs;
- an allowed → flagged flip on a tenant that reported no miss is never explained: one
  tenant's reports never make the model flag more of another tenant's traffic.

Near neighbour: cosine similarity of character n-gram TF-IDF vectors (``char_wb``, 3 to 5
characters, fitted on the sample and the reported texts) with the nearest report of all, at
or above ``FlipBudget.explain_similarity``. Unexplained flips count against a budget, per
tenant and overall: at most ``max(minimum, ceil(share * events))``; beyond it the candidate
is rejected, and the rule names the tenants.

Pure logic over verdicts already computed: no model, no broker.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import TfidfVectorizer

from l2model.gate.rules import RuleResult
from l2model.script import dominant_script

EXAMPLES_PER_TENANT: Final = 3  # per tenant and direction
EXAMPLE_CHARS: Final = 100
NGRAMS: Final = (3, 5)

Direction = Literal["flagged_to_allowed", "allowed_to_flagged"]
ReportedKind = Literal["false_positive", "false_negative"]
# The report kind that can explain a flip in each direction.
EXPLAINED_BY: Final[dict[Direction, ReportedKind]] = {
    "flagged_to_allowed": "false_positive",
    "allowed_to_flagged": "false_negative",
}


class TrafficEvent(BaseModel):
    """One production prompt of the sample, with what its scan event said about it.

    ``language`` is the event metadata's ``lang`` or ``language``, ``category`` its
    ``category`` or ``source``; None when the event named none."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    text: str
    language: str | None = None
    category: str | None = None
    event_id: str | None = None

    @property
    def language_key(self) -> str:
        """The language named by the event, else the script its text is written in."""
        return self.language or dominant_script(self.text)


class ReportedText(BaseModel):
    """The text of an accepted report: a tenant said the model was wrong about it."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    text: str
    kind: ReportedKind


class FlipBudget(BaseModel):
    """How similar a flipped text must be to a report to be explained by it, and how many
    unexplained flips a tenant (or the whole sample) may have."""

    model_config = ConfigDict(frozen=True)

    explain_similarity: float = Field(gt=0, le=1)
    share: float = Field(ge=0, le=1)
    minimum: int = Field(ge=0)

    def allowance(self, events: int) -> int:
        # Rounded before ceil: 0.01 * 700 is 7.000000000000001 in binary, not 8 flips' worth.
        return max(self.minimum, math.ceil(round(self.share * events, 9)))


class FlipCounts(BaseModel):
    """Counts of one group of the sample (a tenant, a language, a category)."""

    model_config = ConfigDict(frozen=True)

    key: str
    events: int
    flagged_before: int
    flagged_after: int
    to_allowed: int
    to_flagged: int
    unexplained_to_allowed: int
    unexplained_to_flagged: int

    @property
    def unexplained(self) -> int:
        return self.unexplained_to_allowed + self.unexplained_to_flagged


class TenantFlips(FlipCounts):
    """A tenant's counts, with what it reported and its budget of unexplained flips."""

    reported_false_positives: int
    reported_false_negatives: int
    allowance: int

    @property
    def within_budget(self) -> bool:
        return self.unexplained <= self.allowance


class FlipExample(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    event_id: str | None
    direction: Direction
    explained: bool
    # The similarity to the nearest reported text (any tenant, any kind; 0 when nothing was
    # reported), and that text.
    similarity: float
    nearest_report: str | None
    language: str
    category: str | None
    text: str  # the first EXAMPLE_CHARS characters


class CounterfactualReport(FlipCounts):
    """The whole sample's counts (key "all"), then by tenant, language and category."""

    old: str
    new: str
    budget: FlipBudget
    tenants: int
    allowance: int
    by_tenant: list[TenantFlips]
    by_language: list[FlipCounts]
    by_category: list[FlipCounts]  # the events whose category (or source) is known
    examples: list[FlipExample]
    rules: list[RuleResult]
    accepted: bool

    def summary(self) -> str:
        """One line: what the replay saw and how much of it nothing explains."""
        if not self.events:
            return "no recent traffic to replay"
        return (
            f"{self.events} recent events of {self.tenants} tenant(s): {self.to_allowed} "
            f"un-flagged, {self.to_flagged} newly flagged, {self.unexplained} unexplained "
            f"(budget {self.allowance})"
        )


def counterfactual_report(
    sample: Sequence[TrafficEvent],
    old_flagged: Sequence[bool] | np.ndarray,
    new_flagged: Sequence[bool] | np.ndarray,
    reported: Sequence[ReportedText],
    budget: FlipBudget,
    *,
    old: str = "old",
    new: str = "new",
) -> CounterfactualReport:
    """Counts the flips between the two models' decisions on ``sample``, explains them by
    the tenants' ``reported`` texts, and judges the unexplained ones against ``budget``. An
    empty sample is not measured, and does not reject."""
    before = np.asarray(old_flagged, dtype=bool)
    after = np.asarray(new_flagged, dtype=bool)
    if not len(sample) == len(before) == len(after):
        raise ValueError(
            f"need one decision per event from each model: {len(sample)} events, "
            f"{len(before)} old and {len(after)} new decisions"
        )
    flips = np.flatnonzero(before != after)
    explained_by = explanations(sample, reported, budget.explain_similarity)
    unexplained = explained_by.unexplained(before, after)
    languages = [event.language_key for event in sample]

    def group(keys: Sequence[str | None]) -> list[FlipCounts]:
        return [
            _counts(key, rows, before, after, unexplained)
            for key, rows in sorted(_rows_by(keys).items())
        ]

    reports_of = _reports_by_tenant(reported)
    by_tenant = [
        TenantFlips(
            **_counts(tenant, rows, before, after, unexplained).model_dump(),
            reported_false_positives=reports_of.get((tenant, "false_positive"), 0),
            reported_false_negatives=reports_of.get((tenant, "false_negative"), 0),
            allowance=budget.allowance(len(rows)),
        )
        for tenant, rows in sorted(_rows_by([e.tenant_id for e in sample]).items())
    ]
    overall = _counts("all", np.arange(len(sample)), before, after, unexplained)
    allowance = budget.allowance(len(sample))
    rules = _rules(by_tenant, overall, allowance, budget)
    return CounterfactualReport(
        **overall.model_dump(),
        old=old,
        new=new,
        budget=budget,
        tenants=len(by_tenant),
        allowance=allowance,
        by_tenant=by_tenant,
        by_language=group(languages),
        by_category=group([event.category for event in sample]),
        examples=_examples(sample, flips, after, unexplained, explained_by, languages),
        rules=rules,
        accepted=all(rule.status != "fail" for rule in rules),
    )


def _direction(flagged_after: bool) -> Direction:
    return "allowed_to_flagged" if flagged_after else "flagged_to_allowed"


@dataclass(frozen=True)
class Explanations:
    """For each event of a sample: the reported text most similar to it (any tenant, any
    kind), that similarity, and whether a flip of the event would be explained in each
    direction (see the module's docstring). Computed once per sample, so that a learner can
    weigh many candidates' flips against the gate cheaply."""

    similarity: np.ndarray
    nearest: list[str | None]
    if_allowed: np.ndarray
    if_flagged: np.ndarray

    def unexplained(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Per event: did it flip without an explanation?"""
        to_allowed, to_flagged = before & ~after, ~before & after
        found: np.ndarray = (to_allowed & ~self.if_allowed) | (to_flagged & ~self.if_flagged)
        return found


def explanations(
    sample: Sequence[TrafficEvent], reported: Sequence[ReportedText], floor: float
) -> Explanations:
    count = len(sample)
    asked = {(item.tenant_id, item.kind) for item in reported}
    own_fp = np.array([(e.tenant_id, "false_positive") in asked for e in sample], dtype=bool)
    own_fn = np.array([(e.tenant_id, "false_negative") in asked for e in sample], dtype=bool)
    if not count or not reported:
        return Explanations(np.zeros(count), [None] * count, own_fp, own_fn)
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAMS)
    vectoriser.fit([*(event.text for event in sample), *(item.text for item in reported)])
    # Rows are L2-normalised, so a dot product is the cosine.
    events = vectoriser.transform([event.text for event in sample])
    scores = (events @ vectoriser.transform([item.text for item in reported]).T).toarray()
    best = scores.argmax(axis=1)
    similarity = scores[np.arange(count), best]
    kinds = np.array([reported[column].kind for column in best])
    return Explanations(
        similarity=similarity,
        nearest=[reported[column].text for column in best],
        if_allowed=own_fp | ((similarity >= floor) & (kinds == "false_positive")),
        if_flagged=own_fn,
    )


def within_budget(
    sample: Sequence[TrafficEvent],
    before: np.ndarray,
    after: np.ndarray,
    explained: Explanations,
    budget: FlipBudget,
) -> bool:
    """Would the gate accept these flips: every tenant's and the whole sample's unexplained
    flips within their allowances?"""
    unexplained = explained.unexplained(before, after)
    tenants = _rows_by([event.tenant_id for event in sample])
    return int(unexplained.sum()) <= budget.allowance(len(sample)) and all(
        int(unexplained[rows].sum()) <= budget.allowance(len(rows)) for rows in tenants.values()
    )


K = TypeVar("K", bound=Hashable)


def _rows_by(keys: Sequence[K | None]) -> dict[K, np.ndarray]:
    """Positions of each key (None: left out), in order."""
    rows: dict[K, list[int]] = {}
    for position, key in enumerate(keys):
        if key is not None:
            rows.setdefault(key, []).append(position)
    return {key: np.array(found, dtype=np.intp) for key, found in rows.items()}


def _reports_by_tenant(reported: Sequence[ReportedText]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for item in reported:
        counts[item.tenant_id, item.kind] = counts.get((item.tenant_id, item.kind), 0) + 1
    return counts


def _counts(
    key: str, rows: np.ndarray, before: np.ndarray, after: np.ndarray, unexplained: np.ndarray
) -> FlipCounts:
    was, now, odd = before[rows], after[rows], unexplained[rows]
    return FlipCounts(
        key=key,
        events=len(rows),
        flagged_before=int(was.sum()),
        flagged_after=int(now.sum()),
        to_allowed=int((was & ~now).sum()),
        to_flagged=int((~was & now).sum()),
        unexplained_to_allowed=int((odd & was).sum()),
        unexplained_to_flagged=int((odd & now).sum()),
    )


def _examples(
    sample: Sequence[TrafficEvent],
    flips: np.ndarray,
    after: np.ndarray,
    unexplained: np.ndarray,
    explained_by: Explanations,
    languages: list[str],
) -> list[FlipExample]:
    """A few flips per tenant and direction, the unexplained ones first."""
    flipped = sorted(
        (int(at) for at in flips),
        key=lambda at: (sample[at].tenant_id, _direction(bool(after[at])), not unexplained[at]),
    )
    taken: dict[tuple[str, Direction], int] = {}
    examples = []
    for at in flipped:
        event, direction = sample[at], _direction(bool(after[at]))
        shown = taken.get((event.tenant_id, direction), 0)
        if shown >= EXAMPLES_PER_TENANT:
            continue
        taken[event.tenant_id, direction] = shown + 1
        report = explained_by.nearest[at]
        examples.append(
            FlipExample(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                direction=direction,
                explained=not bool(unexplained[at]),
                similarity=round(float(explained_by.similarity[at]), 4),
                nearest_report=None if report is None else report[:EXAMPLE_CHARS],
                language=languages[at],
                category=event.category,
                text=event.text[:EXAMPLE_CHARS],
            )
        )
    return examples


def _rules(
    tenants: Sequence[TenantFlips], overall: FlipCounts, allowance: int, budget: FlipBudget
) -> list[RuleResult]:
    limit = f"max({budget.minimum}, {budget.share:.2%} of {{}} events, rounded up)"
    per_tenant = f"unexplained flips per tenant <= {limit.format('its')}"
    everyone = f"unexplained flips overall <= {limit.format('all')}"
    if not tenants:
        nothing = "no recent traffic in the sample"
        return [
            RuleResult(rule=rule, status="not measured", value=None, detail=nothing)
            for rule in (per_tenant, everyone)
        ]
    over = sorted(
        (t for t in tenants if not t.within_budget), key=lambda t: (-t.unexplained, t.key)
    )
    if over:
        tenant_detail = "; ".join(_over_budget(t) for t in over)
    else:
        worst = max(
            tenants, key=lambda t: (t.unexplained / max(t.allowance, 1), t.unexplained, t.key)
        )
        closest = (
            f"closest: {worst.key}, {worst.unexplained} unexplained, budget {worst.allowance}"
            if worst.unexplained
            else "no unexplained flip"
        )
        tenant_detail = f"{len(tenants)} tenant(s) within budget; {closest}"
    return [
        RuleResult(
            rule=per_tenant,
            status="fail" if over else "pass",
            value=float(len(over)),
            detail=tenant_detail,
        ),
        RuleResult(
            rule=everyone,
            status="pass" if overall.unexplained <= allowance else "fail",
            value=float(overall.unexplained),
            detail=f"{overall.unexplained} unexplained ({_ways(overall)}) of "
            f"{overall.to_allowed + overall.to_flagged} flips in {overall.events} events; "
            f"budget {allowance}",
        ),
    ]


def _ways(counts: FlipCounts) -> str:
    return (
        f"{counts.unexplained_to_allowed} flagged→allowed, "
        f"{counts.unexplained_to_flagged} allowed→flagged"
    )


def _over_budget(tenant: TenantFlips) -> str:
    if tenant.reported_false_positives or tenant.reported_false_negatives:
        said = (
            f"reported {tenant.reported_false_positives} false positive(s), "
            f"{tenant.reported_false_negatives} miss(es)"
        )
    else:
        said = "reported nothing"
    return (
        f"{tenant.key}: {tenant.unexplained} unexplained ({_ways(tenant)}) of "
        f"{tenant.events} events, budget {tenant.allowance}; {said}"
    )
