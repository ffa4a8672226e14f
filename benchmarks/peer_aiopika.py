"""A payment consumer on plain aio-pika: the peer a hospital's developer would write by hand.

    HUIMIN_BROKER_URL=... HUIMIN_PLATFORM_URL=... HUIMIN_CONCURRENCY=8 \
        .venv/bin/python benchmarks/peer_aiopika.py

Prefetch = HUIMIN_CONCURRENCY; aio-pika runs each delivery's callback as its own asyncio task,
so that many events are in flight at once. Per event: peer_work.PeerWork (validate, seal),
a POST with httpx.AsyncClient, open the answer, publish the result with a publisher confirm
(the channel's default), ack. No ledger, no idempotency, no reconciliation (benchmarks/peers.py).
"""

from __future__ import annotations

import asyncio
import signal

import aio_pika
import httpx
from peer_work import EVENT_KEY, JSON_HEADERS, PEER_QUEUE, PeerWork, ResultMessage

from worker.errors import InvalidEvent
from worker.settings import Settings


async def main() -> None:
    settings = Settings()
    work = PeerWork(settings)
    connection = await aio_pika.connect_robust(settings.broker_url.get_secret_value())
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=settings.concurrency)
    events = await channel.declare_exchange("his.events", "topic", durable=True)
    results = await channel.declare_exchange("his.results", "topic", durable=True)
    queue = await channel.declare_queue(
        PEER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(events, EVENT_KEY)
    limits = httpx.Limits(max_connections=settings.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=settings.read_timeout_s) as http:

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            outgoing = await process(work, http, message.body)
            await results.publish(
                aio_pika.Message(
                    outgoing.body,
                    content_type="application/json",
                    correlation_id=outgoing.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=outgoing.routing_key,
            )  # returns once RabbitMQ confirmed it
            await message.ack()

        await queue.consume(handle)
        await stopped()
    await connection.close()


async def process(work: PeerWork, http: httpx.AsyncClient, body: bytes) -> ResultMessage:
    try:
        call = work.request(body)
    except InvalidEvent as exc:
        return work.refused(body, exc)
    response = await http.post(call.url, content=call.body, headers=JSON_HEADERS)
    return work.answer(call, response.status_code, response.content)


async def stopped() -> None:
    """Until SIGTERM or SIGINT (peers.py stops each contender with SIGTERM)."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()


if __name__ == "__main__":
    asyncio.run(main())
