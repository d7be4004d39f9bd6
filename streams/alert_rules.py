"""The alert rules: plain functions from windows to readings, and readings to alert changes.

Every rule reads one window and answers ``crossed`` (fire), ``clear`` (below the lower,
clearing threshold), ``between`` (keep whatever state there is) or ``too_few`` (not enough
samples to say anything). For proportions the Wilson 95 % bound, not the point value, must
cross: a window of 40 canaries with 2 false positives is 5 % but proves nothing. The bounds
are the window agent's (``Rate.interval``); a rate without one counts as ``too_few``.

An alert belongs to one rule, one window and one model version, and it fires at most once.
It resolves when its own window, revised, reads clear, or when a later window of the same
model version reads clear: the spike is over. A model version that no longer serves has no
later windows, so its alert also resolves when a later window of another version reads clear
and the alert's version has no window at that time: another model serves in its place, and
it reads clear (a rollback ends a bad model's spike so).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from l2loop.schemas.common import utc_now
from l2loop.schemas.windows import Alert, AlertRule, Rate, WindowStats, window_field
from l2loop.settings import Settings
from l2loop.stores.alerts import Change, fingerprint

Reading = Literal["crossed", "clear", "between", "too_few"]

RULES: tuple[AlertRule, ...] = (
    "fp_rate_spike",
    "recall_drop",
    "latency_p95",
    "error_rate",
    "flag_rate_shift",
)

# Median absolute deviation to standard deviation, for normally distributed rates.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_samples: int = 100
    fp_rate: float = 0.02
    fp_rate_clear: float = 0.015
    recall: float = 0.90
    recall_clear: float = 0.92
    latency_p95_ms: float = 5.0
    latency_p95_clear_ms: float = 4.0
    error_rate: float = 0.001
    error_rate_clear: float = 0.0005
    flag_rate_trailing: int = 24
    flag_rate_min_trailing: int = 12
    flag_rate_band_sigmas: float = 4.0
    flag_rate_band_floor: float = 0.02
    flag_rate_clear_share: float = 0.75

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            min_samples=settings.alert_min_samples,
            fp_rate=settings.alert_fp_rate,
            fp_rate_clear=settings.alert_fp_rate_clear,
            recall=settings.alert_recall,
            recall_clear=settings.alert_recall_clear,
            latency_p95_ms=settings.alert_latency_p95_ms,
            latency_p95_clear_ms=settings.alert_latency_p95_clear_ms,
            error_rate=settings.alert_error_rate,
            error_rate_clear=settings.alert_error_rate_clear,
            flag_rate_trailing=settings.alert_flag_rate_trailing,
            flag_rate_min_trailing=settings.alert_flag_rate_min_trailing,
            flag_rate_band_sigmas=settings.alert_flag_rate_band_sigmas,
            flag_rate_band_floor=settings.alert_flag_rate_band_floor,
            flag_rate_clear_share=settings.alert_flag_rate_clear_share,
        )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one rule reads in one window."""

    rule: AlertRule
    reading: Reading
    value: float | None
    threshold: float
    bound: float | None
    samples: int
    measure: str  # which quantity, e.g. canary_fp_rate


def _rate_above(
    rule: AlertRule, measure: str, rate: Rate, fire: float, clear: float, min_samples: int
) -> Evaluation:
    def reading(state: Reading, bound: float | None = None) -> Evaluation:
        return Evaluation(rule, state, rate.value, fire, bound, rate.total, measure)

    if rate.total < min_samples or rate.value is None or rate.interval is None:
        return reading("too_few")
    if rate.interval.low > fire:
        return reading("crossed", rate.interval.low)
    return reading("clear" if rate.value < clear else "between")


def _rate_below(
    rule: AlertRule, measure: str, rate: Rate, fire: float, clear: float, min_samples: int
) -> Evaluation:
    def reading(state: Reading, bound: float | None = None) -> Evaluation:
        return Evaluation(rule, state, rate.value, fire, bound, rate.total, measure)

    if rate.total < min_samples or rate.value is None or rate.interval is None:
        return reading("too_few")
    if rate.interval.high < fire:
        return reading("crossed", rate.interval.high)
    return reading("clear" if rate.value > clear else "between")


def fp_rate_spike(window: WindowStats, limits: Thresholds) -> Evaluation:
    """Either FP rate, canary or reported, crossing the threshold fires; both must clear."""
    readings = [
        _rate_above(
            "fp_rate_spike", measure, rate, limits.fp_rate, limits.fp_rate_clear, limits.min_samples
        )
        for measure, rate in (
            ("canary_fp_rate", window.canary_fp_rate),
            ("reported_fp_rate", window.reported_fp_rate),
        )
    ]
    crossed = [r for r in readings if r.reading == "crossed"]
    if crossed:
        return max(crossed, key=lambda r: r.bound or 0.0)
    # A rate measured on too few samples yet leaves the question open; one not measured at
    # all (no canaries in this deployment, say) does not.
    undecided = [r for r in readings if r.reading in ("between", "too_few") and r.samples > 0]
    if undecided:
        return min(undecided, key=lambda r: r.reading != "between")
    known = [r for r in readings if r.reading == "clear"]
    return max(known, key=lambda r: r.value or 0.0) if known else readings[0]


def recall_drop(window: WindowStats, limits: Thresholds) -> Evaluation:
    return _rate_below(
        "recall_drop",
        "recall",
        window.recall,
        limits.recall,
        limits.recall_clear,
        limits.min_samples,
    )


def error_rate(window: WindowStats, limits: Thresholds) -> Evaluation:
    return _rate_above(
        "error_rate",
        "error_rate",
        window.error_rate,
        limits.error_rate,
        limits.error_rate_clear,
        limits.min_samples,
    )


def latency_p95(window: WindowStats, limits: Thresholds) -> Evaluation:
    """Model time per prompt; a quantile has no Wilson interval, so the value itself counts."""
    latency = window.model_latency_ms
    p95 = latency.p95

    def reading(state: Reading) -> Evaluation:
        return Evaluation(
            "latency_p95", state, p95, limits.latency_p95_ms, None, latency.count, "model_ms_p95"
        )

    if latency.count < limits.min_samples or p95 is None:
        return reading("too_few")
    if p95 > limits.latency_p95_ms:
        return reading("crossed")
    return reading("clear" if p95 < limits.latency_p95_clear_ms else "between")


@dataclass(frozen=True, slots=True)
class Band:
    low: float
    high: float
    center: float


def flag_rate_band(trailing: Iterable[WindowStats], limits: Thresholds) -> Band | None:
    """The band of the trailing windows' flag rates, or None with too little history."""
    rates = [
        w.flag_rate.value
        for w in trailing
        if w.flag_rate.value is not None and w.flag_rate.total >= limits.min_samples
    ]
    if len(rates) < limits.flag_rate_min_trailing:
        return None
    center = statistics.median(rates)
    spread = _MAD_TO_SIGMA * statistics.median(abs(rate - center) for rate in rates)
    half = max(limits.flag_rate_band_sigmas * spread, limits.flag_rate_band_floor)
    return Band(low=center - half, high=center + half, center=center)


def flag_rate_shift(
    window: WindowStats, trailing: Sequence[WindowStats], limits: Thresholds
) -> Evaluation:
    """The label-free warning: this window's flag rate outside its trailing windows' band."""
    rate = window.flag_rate
    band = flag_rate_band(trailing, limits)

    def reading(state: Reading, threshold: float, bound: float | None = None) -> Evaluation:
        return Evaluation(
            "flag_rate_shift", state, rate.value, threshold, bound, rate.total, "flag_rate"
        )

    if band is None or rate.total < limits.min_samples or rate.value is None:
        return reading("too_few", band.high if band else 0.0)
    if rate.interval is None:
        return reading("too_few", band.high)
    if rate.interval.low > band.high:
        return reading("crossed", band.high, rate.interval.low)
    if rate.interval.high < band.low:
        return reading("crossed", band.low, rate.interval.high)
    inner = limits.flag_rate_clear_share * (band.high - band.center)
    if abs(rate.value - band.center) <= inner:
        return reading("clear", band.high)
    return reading("between", band.high)


def evaluate_window(
    window: WindowStats, trailing: Sequence[WindowStats], limits: Thresholds
) -> list[Evaluation]:
    """Every rule's reading of ``window``; ``trailing`` are the windows before it."""
    return [
        fp_rate_spike(window, limits),
        recall_drop(window, limits),
        latency_p95(window, limits),
        error_rate(window, limits),
        flag_rate_shift(window, trailing, limits),
    ]


def trailing_starts(window: WindowStats, count: int) -> list[datetime]:
    """The starts of the ``count`` windows before ``window``, newest first."""
    length = window.window_end - window.window_start
    if length <= timedelta(0):
        return []
    return [window.window_start - length * step for step in range(1, count + 1)]


def following_starts(window: WindowStats, count: int) -> list[datetime]:
    """The starts of the ``count`` windows after ``window``, oldest first."""
    length = window.window_end - window.window_start
    if length <= timedelta(0):
        return []
    return [window.window_start + length * step for step in range(1, count + 1)]


def alert_id(rule: str, window_start: datetime, model_version: str) -> str:
    return f"{rule}|{int(window_start.timestamp())}|{model_version}"


def _labels(rule: AlertRule, window: WindowStats) -> dict[str, str]:
    return {
        "alertname": rule,
        "service": "l2loop",
        "severity": "critical" if rule in ("fp_rate_spike", "recall_drop") else "warning",
        "model_version": window.model_version,
        "window_start": window.window_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _describe(evaluation: Evaluation) -> str:
    value = "n/a" if evaluation.value is None else f"{evaluation.value:.4g}"
    bound = "" if evaluation.bound is None else f", Wilson 95 % bound {evaluation.bound:.4g}"
    return (
        f"{evaluation.measure} = {value} over {evaluation.samples} samples{bound}; "
        f"threshold {evaluation.threshold:.4g}"
    )


def firing_alert(window: WindowStats, evaluation: Evaluation) -> Alert:
    labels = _labels(evaluation.rule, window)
    now = utc_now()
    return Alert(
        rule=evaluation.rule,
        status="firing",
        fingerprint=fingerprint(labels),
        window_start=window.window_start,
        window_end=window.window_end,
        model_version=window.model_version,
        value=evaluation.value if evaluation.value is not None else 0.0,
        threshold=evaluation.threshold,
        bound=evaluation.bound,
        samples=evaluation.samples,
        labels=labels,
        annotations={
            "summary": f"{evaluation.rule} in the window of "
            f"{labels['window_start']} ({window.model_version})",
            "description": _describe(evaluation),
            "measure": evaluation.measure,
        },
        starts_at=now,
        changed_at=now,
    )


def resolved_alert(firing: Alert, by: WindowStats, evaluation: Evaluation) -> Alert:
    now = utc_now()
    return firing.model_copy(
        update={
            "status": "resolved",
            "ends_at": now,
            "changed_at": now,
            "annotations": {
                **firing.annotations,
                "resolved_by": f"window {by.window_start:%Y-%m-%dT%H:%M:%SZ} "
                f"({by.model_version}) revision {by.revision}: {_describe(evaluation)}",
            },
        }
    )


def replaced(alert: Alert, by: WindowStats, known_windows: Collection[str] | None) -> bool:
    """Whether ``by`` is a later window of another model version at a time when the alert's
    version had no window: that version no longer served. ``known_windows`` are the window
    fields known to exist; None when not known, and then nothing counts as replaced."""
    return (
        known_windows is not None
        and alert.model_version != by.model_version
        and alert.window_start < by.window_start
        and window_field(by.window_start, alert.model_version) not in known_windows
    )


def alert_changes(
    windows: Sequence[tuple[WindowStats, Sequence[Evaluation]]],
    open_alerts: Mapping[str, Alert],
    known_windows: Collection[str] | None = None,
) -> list[Change]:
    """The changes the evaluated windows call for, oldest window first.

    ``open_alerts`` are the firing alerts by id. A crossing proposes a firing alert (Redis
    refuses it if that window and rule ever fired); a clear reading resolves the open alert of
    its own window, those of earlier windows of the same model version and rule, and those of
    versions it ``replaced`` (judged against ``known_windows``).
    """
    still_open = dict(open_alerts)
    changes: list[Change] = []
    for window, evaluations in sorted(windows, key=lambda item: item[0].window_start):
        for evaluation in evaluations:
            own_id = alert_id(evaluation.rule, window.window_start, window.model_version)
            if evaluation.reading == "crossed" and own_id not in still_open:
                alert = firing_alert(window, evaluation)
                still_open[own_id] = alert
                changes.append(Change(own_id, alert))
            elif evaluation.reading == "clear":
                ended = [
                    (key, alert)
                    for key, alert in still_open.items()
                    if alert.rule == evaluation.rule
                    and (
                        (
                            alert.model_version == window.model_version
                            and alert.window_start <= window.window_start
                        )
                        or replaced(alert, window, known_windows)
                    )
                ]
                for key, alert in sorted(ended, key=lambda item: item[1].window_start):
                    del still_open[key]
                    changes.append(Change(key, resolved_alert(alert, window, evaluation)))
    return changes
