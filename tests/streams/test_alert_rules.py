"""The alert rules as plain logic: no broker, no Redis."""

from __future__ import annotations

import random

import pytest

from l2loop.schemas.windows import Alert, WindowStats, window_field
from l2loop.streams.alert_rules import (
    Change,
    Thresholds,
    alert_changes,
    alert_id,
    error_rate,
    evaluate_window,
    flag_rate_band,
    flag_rate_shift,
    fp_rate_spike,
    latency_p95,
    recall_drop,
    trailing_starts,
)
from tests.fixtures.windows import HOUR, window

LIMITS = Thresholds()


def test_a_window_with_too_few_samples_never_alerts_however_bad_it_looks() -> None:
    tiny = window(
        0,
        events=50,
        flagged=50,
        canary_benign=50,
        canary_fp=50,
        canary_malicious=50,
        canary_tp=0,
        reported_fp=50,
        errors=50,
        model_p95_ms=500.0,
    )
    readings = evaluate_window(tiny, [], LIMITS)
    assert [r.reading for r in readings] == ["too_few"] * 5
    assert alert_changes([(tiny, readings)], {}) == []


def test_fp_rate_fires_only_when_the_wilson_lower_bound_crosses() -> None:
    # 3 % point value, but 6/200 is not evidence of > 2 %: the lower bound is about 1.4 %.
    weak = fp_rate_spike(window(0, canary_benign=200, canary_fp=6), LIMITS)
    assert weak.value == pytest.approx(0.03)
    assert weak.reading == "between"
    # The same 3 % over 5,000 canaries is: the lower bound is about 2.6 %.
    strong = fp_rate_spike(window(0, canary_benign=5000, canary_fp=150), LIMITS)
    assert strong.reading == "crossed"
    assert strong.bound is not None and strong.bound > LIMITS.fp_rate
    assert strong.measure == "canary_fp_rate"


def test_reported_fp_rate_fires_too() -> None:
    reading = fp_rate_spike(window(0, events=4000, reported_fp=200), LIMITS)
    assert reading.reading == "crossed"
    assert reading.measure == "reported_fp_rate"


def test_fp_rate_clears_only_below_the_lower_threshold() -> None:
    # 1.8 %: under the 2 % threshold but above the 1.5 % clear level -> hold the state.
    assert fp_rate_spike(window(0, canary_benign=1000, canary_fp=18), LIMITS).reading == "between"
    assert fp_rate_spike(window(0, canary_benign=1000, canary_fp=10), LIMITS).reading == "clear"


def test_recall_fires_on_the_upper_bound_and_clears_above_its_clear_level() -> None:
    assert recall_drop(window(0, canary_malicious=120, canary_tp=104), LIMITS).reading == (
        "between"  # 86.7 % but the upper bound is above 90 %
    )
    dropped = recall_drop(window(0, canary_malicious=1000, canary_tp=850), LIMITS)
    assert dropped.reading == "crossed"
    assert dropped.bound is not None and dropped.bound < LIMITS.recall
    assert recall_drop(window(0, canary_malicious=1000, canary_tp=910), LIMITS).reading == (
        "between"
    )
    assert recall_drop(window(0, canary_malicious=1000, canary_tp=950), LIMITS).reading == "clear"


def test_latency_and_error_rate() -> None:
    assert latency_p95(window(0, model_p95_ms=6.0), LIMITS).reading == "crossed"
    assert latency_p95(window(0, model_p95_ms=4.5), LIMITS).reading == "between"
    assert latency_p95(window(0, model_p95_ms=3.0), LIMITS).reading == "clear"
    assert error_rate(window(0, events=20000, errors=60), LIMITS).reading == "crossed"
    assert error_rate(window(0, events=20000, errors=25), LIMITS).reading == "between"
    assert error_rate(window(0, events=20000, errors=2), LIMITS).reading == "clear"


def _stable_series(hours: int, seed: int = 7) -> list[WindowStats]:
    rng = random.Random(seed)
    return [window(h, flagged=rng.randint(90, 110)) for h in range(hours)]


def test_flag_rate_band_needs_enough_trailing_windows() -> None:
    series = _stable_series(24)
    assert flag_rate_band(series[: LIMITS.flag_rate_min_trailing - 1], LIMITS) is None
    band = flag_rate_band(series, LIMITS)
    assert band is not None and band.low < 0.05 < band.high


def test_flag_rate_shift_fires_outside_the_band_and_clears_inside() -> None:
    trailing = _stable_series(24)
    assert flag_rate_shift(window(24, flagged=104), trailing, LIMITS).reading == "clear"
    up = flag_rate_shift(window(24, flagged=400), trailing, LIMITS)
    assert up.reading == "crossed" and up.bound is not None and up.bound > up.threshold
    down = flag_rate_shift(window(24, flagged=5), trailing, LIMITS)
    assert down.reading == "crossed" and down.bound is not None and down.bound < down.threshold
    assert flag_rate_shift(window(24, flagged=400), trailing[:5], LIMITS).reading == "too_few"


def test_trailing_starts_step_back_by_the_window_length() -> None:
    starts = trailing_starts(window(30), 3)
    assert [window(30).window_start - s for s in starts] == [HOUR, 2 * HOUR, 3 * HOUR]


def _spike(hour: int, revision: int = 1, model_version: str = "m1") -> WindowStats:
    return window(
        hour, revision=revision, model_version=model_version, canary_benign=1000, canary_fp=80
    )


def _changes(windows: list[WindowStats], open_alerts: dict[str, Alert]) -> list[Change]:
    return alert_changes([(w, evaluate_window(w, [], LIMITS)) for w in windows], open_alerts)


def test_a_spike_fires_once_and_a_later_clear_window_resolves_it() -> None:
    fired = _changes([_spike(100)], {})
    assert [(c.alert.rule, c.alert.status) for c in fired] == [("fp_rate_spike", "firing")]
    alert = fired[0].alert
    assert alert.labels["alertname"] == "fp_rate_spike"
    assert alert.window_start == _spike(100).window_start
    assert alert.bound is not None and alert.bound > alert.threshold
    open_alerts = {fired[0].alert_id: alert}
    # The spike window, revised with more of the same, changes nothing.
    assert _changes([_spike(100, revision=2)], open_alerts) == []
    # The next hour between thresholds keeps it open; a clear hour resolves it.
    assert _changes([window(101, canary_benign=1000, canary_fp=18)], open_alerts) == []
    resolved = _changes([window(102)], open_alerts)
    assert [(c.alert_id, c.alert.status) for c in resolved] == [(fired[0].alert_id, "resolved")]
    assert resolved[0].alert.fingerprint == alert.fingerprint
    assert resolved[0].alert.starts_at == alert.starts_at
    assert resolved[0].alert.ends_at is not None


def test_fire_and_resolve_in_one_batch_come_out_in_window_order() -> None:
    changes = _changes([window(101), _spike(100)], {})
    assert [c.alert.status for c in changes] == ["firing", "resolved"]
    assert changes[0].alert_id == changes[1].alert_id


def test_a_clear_window_resolves_only_its_rule_and_model_version() -> None:
    spike = _changes([_spike(100)], {})[0]
    open_alerts = {spike.alert_id: spike.alert}
    assert _changes([window(101, model_version="m2")], open_alerts) == []
    # An earlier window reading clear does not end a later window's alert.
    assert _changes([window(99)], open_alerts) == []


def test_a_clear_window_of_the_model_serving_in_its_place_resolves_a_replaced_version() -> None:
    spike = _changes([_spike(100, model_version="spike")], {})[0]
    open_alerts = {spike.alert_id: spike.alert}
    clear = window(101, model_version="m1")
    evaluated = [(clear, evaluate_window(clear, [], LIMITS))]
    # The spike version served on in hour 101 beside m1: its alert stays open.
    spike_101 = window(101, model_version="spike")
    both = {
        window_field(clear.window_start, clear.model_version),
        window_field(spike_101.window_start, spike_101.model_version),
    }
    assert alert_changes(evaluated, open_alerts, both) == []
    # Hour 101 was served by m1 alone: the spike version was replaced and m1 reads clear.
    only_m1 = {window_field(clear.window_start, clear.model_version)}
    resolved = alert_changes(evaluated, open_alerts, only_m1)
    assert [(c.alert_id, c.alert.status) for c in resolved] == [(spike.alert_id, "resolved")]
    assert "(m1)" in resolved[0].alert.annotations["resolved_by"]
    # A window of the same time, or one that is not clear, replaces nothing.
    same_hour = window(100, model_version="m1")
    assert (
        alert_changes([(same_hour, evaluate_window(same_hour, [], LIMITS))], open_alerts, set())
        == []
    )
    bad = _spike(101, model_version="m1")
    changes = alert_changes([(bad, evaluate_window(bad, [], LIMITS))], open_alerts, set())
    assert [c.alert.model_version for c in changes] == ["m1"]


def test_every_rule_gets_its_own_alert_per_window() -> None:
    bad = window(
        5,
        canary_benign=1000,
        canary_fp=80,
        canary_malicious=1000,
        canary_tp=800,
        model_p95_ms=9.0,
        events=20000,
        errors=100,
    )
    changes = _changes([bad], {})
    assert sorted(c.alert.rule for c in changes) == [
        "error_rate",
        "fp_rate_spike",
        "latency_p95",
        "recall_drop",
    ]
    assert len({c.alert.fingerprint for c in changes}) == 4
    assert {c.alert_id for c in changes} == {
        alert_id(rule, bad.window_start, "m1")
        for rule in ("error_rate", "fp_rate_spike", "latency_p95", "recall_drop")
    }


def test_an_fp_rate_measured_on_too_few_samples_keeps_the_question_open() -> None:
    # Plenty of production events without reports, but only 40 canaries so far this hour.
    early = window(0, canary_benign=40, canary_fp=0)
    assert fp_rate_spike(early, LIMITS).reading == "too_few"
    # A deployment without canaries clears on the reported rate alone.
    assert fp_rate_spike(window(0, canary_benign=0, canary_fp=0), LIMITS).reading == "clear"
