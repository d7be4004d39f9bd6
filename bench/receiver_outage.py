"""Scoring throughput while the alert receiver is down, beside it while the receiver is up,
in the same run.

    python bench/receiver_outage.py [--events 8000]

Each side runs a fresh ``l2loop worker`` (every agent) on its own topics, with
``L2LOOP_ALERT_WEBHOOK_URL`` pointing at a real HTTP receiver that answers (up) or at a port
nobody listens on (down). The backlog is labelled canary traffic whose "benign" probes are
attack texts, so that the first window fires ``fp_rate_spike`` at once and, on the down
side, the webhook's outbox is retried for the whole run. Events/s is measured between the
first and the last verdict. The receiver is delivered to from a Redis outbox, never from the
stream (docs/decisions/0009-alert-state-and-delivery.md): the two figures should match.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from scoring_throughput import collect_verdicts, fresh, send_backlog

from l2loop.infra.embedded import free_port
from l2loop.infra.processes import l2loop_process, running
from l2loop.infra.services import serving_settings
from l2loop.infra.topics import ensure_topics
from l2loop.logs import configure
from l2loop.settings import Settings
from l2model.golden import load_golden


class Receiver(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        Receiver.posts += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def receiver_up() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


def spiking_probes(count: int, seed: int) -> list[bytes]:
    """Canary probes of one window: half labelled benign but attack texts (an FP spike)."""
    attacks = [p.text for p in load_golden().probes if p.label == 1]
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        orjson.dumps(
            {
                "event_id": f"r{seed}-{i}",
                "ts": now,
                "tenant_id": "l2loop-canary",
                "text": rng.choice(attacks),
                "ground_truth": {"label": i % 2, "family": "PI", "source": "canary"},
            }
        )
        for i in range(count)
    ]


def scoring_rate(settings: Settings, webhook_url: str, count: int, log: Path) -> float:
    side = settings.model_copy(update={"alert_webhook_url": webhook_url, "retry_cap_s": 1.0})
    asyncio.run(ensure_topics(side))
    worker = l2loop_process(side, "worker", ("worker",), side.web_port, log)
    with running(worker) as process:
        asyncio.run(send_backlog(side, spiking_probes(count, seed=1)))
        seen = asyncio.run(collect_verdicts(side, count, process, timeout_s=600))
    first, last = seen[0][0], seen[-1][0]
    return (len(seen) - 1) / max(last - first, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8_000)
    parser.add_argument("--rounds", type=int, default=2, help="down, up, then up, down, ...")
    args = parser.parse_args()
    configure("warn")
    rates: dict[str, list[float]] = {"down": [], "up": []}
    with serving_settings(Settings(data_dir=Path("var/bench"))) as live, receiver_up() as url:
        urls = {"down": f"http://127.0.0.1:{free_port()}/alerts", "up": url}
        for round_ in range(args.rounds):
            # Alternating the order spreads warm-up and machine load over both sides.
            for side in ("down", "up") if round_ % 2 == 0 else ("up", "down"):
                log = live.data_dir / f"bench-receiver-{side}.log"
                rates[side].append(
                    scoring_rate(fresh(live, f"receiver-{side}"), urls[side], args.events, log)
                )
    print(f"backlog {args.events} labelled events, fp_rate_spike firing in their window")
    print(f"{'alert receiver':<16}{'events/s, each round':>24}")
    for side, figures in rates.items():
        print(f"{side:<16}{'  '.join(f'{rate:.0f}' for rate in figures):>24}")
    print(f"webhook posts received while up: {Receiver.posts}")


if __name__ == "__main__":
    main()
