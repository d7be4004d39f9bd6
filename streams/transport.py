"""The aiokafka transport of Faust, with a short fetch wait.

Faust fixes the consumer's ``fetch_max_wait_ms`` at 1500. Kafka answers a waiting fetch as
soon as data arrives, but some Kafka-protocol brokers (Tansu among them) hold it for the full
wait: measured on Tansu, a record waited 350 ms (p50) to be fetched at 1500, and 4 ms at 10.
The app's brokers use the ``l2kafka://`` scheme to get this transport.
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport import drivers
from faust.transport.drivers import aiokafka as driver

SCHEME = "l2kafka"
FETCH_MAX_WAIT_MS = 20


class ShortFetchConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts (it builds its fetcher then), so setting it here holds.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class ShortFetchConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> ShortFetchConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer: ClassVar[type[ShortFetchConsumer]] = ShortFetchConsumer


drivers.TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
