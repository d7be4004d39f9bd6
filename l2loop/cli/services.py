"""The commands that run until stopped: ``worker``, ``up``, ``api``, ``scheduler``, ``canary``."""

from __future__ import annotations

import asyncio
import signal
import threading

import click
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from l2loop.api.app import create_api
from l2loop.cli.clients import pass_attached
from l2loop.demo.traffic import demo_prompts
from l2loop.infra.services import await_services, serving_settings
from l2loop.logs import configure, logging_config
from l2loop.resilience import EXIT_UNAVAILABLE, DependencyUnreachable
from l2loop.settings import Settings
from l2loop.streams.app import RolesSplitError, Worker, create_app
from l2loop.up import Spike, run_up
from l2loop.workers.canary import run_canary
from l2loop.workers.scheduler import JOB_ID, configure_scheduler, start_scheduler
from l2model.private import private_dir
from l2model.runtime import ModelLoadError

_DURATION = click.option(
    "--duration", default=0.0, show_default=True, help="seconds to run; 0 = until Ctrl-C"
)


class StartupError(click.ClickException):
    """One line on stderr naming what is wrong, and a non-zero exit: no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def prepare_data_dir(settings: Settings) -> None:
    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise StartupError(
            f"data directory {settings.data_dir}: cannot be created ({exc.strerror})"
        ) from None


@click.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run the Faust worker (score agent). Embedded broker/Redis when none is configured."""
    prepare_data_dir(settings)
    with serving_settings(settings) as live:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            # The app loads the model: a broken one is reported before any waiting.
            app = create_app(live)
            loop.run_until_complete(await_services(live))
        except ModelLoadError as exc:
            raise StartupError(f"model: {exc}") from None
        except RolesSplitError as exc:
            raise StartupError(str(exc)) from None
        except DependencyUnreachable as exc:
            raise StartupError(str(exc), EXIT_UNAVAILABLE) from None
        Worker(app, live).execute_from_commandline()


@click.command()
@click.option("--rate", default=200.0, show_default=True, help="demo events per second")
@_DURATION
@click.option(
    "--window",
    "window_s",
    type=click.IntRange(min=60),
    default=60,
    show_default=True,
    help="window length in seconds (production: 3600)",
)
@click.option(
    "--spike-at",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds after start: roll out an over-sensitive model straight to a canary stage "
    "(an FP spike the rollout's analysis should catch)",
)
@click.option(
    "--spike-for",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="seconds before the spike's rollout is aborted, if not rolled back by then",
)
@click.option(
    "--cycle-at",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="seconds after start: run the quarterly cycle now on what users reported "
    "(assemble, retrain, gate, release through a rollout); 0: none",
)
@click.pass_obj
def up(
    settings: Settings,
    rate: float,
    duration: float,
    window_s: int,
    spike_at: float | None,
    spike_for: float,
    cycle_at: float,
) -> None:
    """Embedded broker + Redis, worker, API, quarterly scheduler, demo traffic, canaries and
    reporting users, an optional FP spike, one quarterly cycle on the users' reports, and a
    live summary: FP rate, recall, alerts, reports, suppressions, the rollout's stage."""
    configure("warn")
    spike = Spike(at_s=spike_at, for_s=spike_for) if spike_at is not None else None
    run_up(
        settings,
        demo_prompts(),
        rate=rate,
        duration_s=duration,
        window_s=window_s,
        spike=spike,
        cycle_at_s=cycle_at or None,
    )


@click.command()
@click.option(
    "--per-min",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="probes per minute  [default: L2LOOP_CANARY_PROBES_PER_MIN]",
)
@_DURATION
@pass_attached
def canary(live: Settings, per_min: float | None, duration: float) -> None:
    """Send golden-set canary probes to scan-events (the configured broker, or a running
    `l2loop up`), labelled with their ground truth, until Ctrl-C."""
    if per_min is not None:
        live = live.model_copy(update={"canary_probes_per_min": per_min})

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if duration > 0:
            loop.call_later(duration, stop.set)
        return await run_canary(live, stop)

    sent = asyncio.run(run())
    click.echo(f"sent {sent} canary probes to {live.topic('scan-events')}")


@click.command()
@click.option("--host", default=None, help="listen address (default: settings.api_host)")
@click.option("--port", type=int, default=None, help="listen port (default: settings.api_port)")
@pass_attached
def api(live: Settings, host: str | None, port: int | None) -> None:
    """Serve the HTTP API and the dashboard page (windows, alerts, /metrics, /openapi.json)."""
    uvicorn.run(
        create_api(live),
        host=host or live.api_host,
        port=live.api_port if port is None else port,
        log_config=logging_config(live.log_level),
        log_level=live.log_level.replace("warn", "warning").replace("crit", "critical"),
    )


@click.command()
@pass_attached
def scheduler(live: Settings) -> None:
    """Run the quarterly cycle on its cron (L2LOOP_SCHEDULER_CRON, UTC) until Ctrl-C. The job
    is kept in Redis; however many schedulers run, each quarter's cycle runs once."""
    running = configure_scheduler(BackgroundScheduler(), live)
    start_scheduler(running, live)
    click.echo(f"next quarterly cycle: {running.get_job(JOB_ID).next_run_time}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    running.shutdown(wait=False)
