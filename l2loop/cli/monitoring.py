"""What the loop has measured, as tables: ``windows`` and ``alerts``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import click

from l2loop.cli.clients import T, pass_attached, with_redis
from l2loop.cli.tables import echo_table
from l2loop.schemas.windows import Alert, Rate
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore


def _with_alert_store(settings: Settings, call: Callable[[AlertStore], Awaitable[T]]) -> T:
    return with_redis(
        settings, lambda client: call(AlertStore(client, key_prefix=settings.topic_prefix))
    )


def _percent(rate: Rate) -> str:
    return "-" if rate.value is None else f"{100 * rate.value:.2f}% ({rate.hits}/{rate.total})"


@click.command()
@click.option("--hours", default=48, show_default=True, help="hours up to the newest window")
@pass_attached
def windows(live: Settings, hours: int) -> None:
    """Print the windows of the last HOURS hours as a table, oldest first."""
    found = _with_alert_store(live, lambda store: store.recent_windows(hours))
    header = (
        "window",
        "model",
        "rev",
        "events",
        "flag rate",
        "canary FP",
        "reported FP",
        "recall",
        "p95 ms",
    )
    rows = [
        (
            f"{w.window_start:%Y-%m-%d %H:%M}",
            w.model_version,
            str(w.revision),
            str(w.events),
            _percent(w.flag_rate),
            _percent(w.canary_fp_rate),
            _percent(w.reported_fp_rate),
            _percent(w.recall),
            "-" if w.model_latency_ms.p95 is None else f"{w.model_latency_ms.p95:.2f}",
        )
        for w in found
    ]
    echo_table(header, rows)
    if not rows:
        click.echo("no windows yet")


@click.command()
@click.option("--limit", default=20, show_default=True, help="recent state changes to show")
@pass_attached
def alerts(live: Settings, limit: int) -> None:
    """Print the open alerts, then the latest state changes."""

    async def read(store: AlertStore) -> tuple[list[Alert], list[Alert]]:
        return list((await store.open_alerts()).values()), await store.history(limit)

    open_alerts, recent = _with_alert_store(live, read)
    header = ("status", "rule", "window", "model", "value", "threshold", "samples", "changed")
    for title, shown in (("open", open_alerts), ("recent", recent)):
        click.echo(f"{title}: {len(shown)}")
        echo_table(
            header,
            [
                (
                    a.status,
                    a.rule,
                    f"{a.window_start:%Y-%m-%d %H:%M}",
                    a.model_version,
                    f"{a.value:.4g}",
                    f"{a.threshold:.4g}",
                    str(a.samples),
                    f"{a.changed_at:%Y-%m-%d %H:%M:%S}",
                )
                for a in shown
            ],
        )
