"""Acknowledgements in runs, against the real RabbitMQ: one frame covers a run of settled
deliveries, nothing is acknowledged while a delivery before it is still in hand, and an
acknowledgement held up that way still goes out on its own after a while."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from workers.consumer import AckRuns


async def delivered(channel: AbstractChannel, count: int) -> tuple[str, list[Any]]:
    """A queue of its own holding ``count`` messages, all taken from it unsettled."""
    queue = await channel.declare_queue(exclusive=False, auto_delete=False)
    for number in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=queue.name
        )
    messages = []
    for _ in range(count):
        message = await queue.get(no_ack=False, fail=True)
        assert message is not None
        messages.append(message)
    return queue.name, messages


def spy_on_acks(message: AbstractIncomingMessage) -> list[tuple[int, bool]]:
    sent: list[tuple[int, bool]] = []
    raw: Any = message.channel
    original = raw.basic_ack

    async def basic_ack(delivery_tag: int, multiple: bool = False, **options: Any) -> Any:
        sent.append((delivery_tag, multiple))
        return await original(delivery_tag=delivery_tag, multiple=multiple, **options)

    raw.basic_ack = basic_ack
    return sent


async def back_in_queue(amqp: AbstractRobustConnection, name: str) -> int:
    """How many messages are ready once the taking channel is closed."""
    async with amqp.channel() as other:
        queue = await other.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count or 0
        await other.queue_delete(name)
    return count


async def test_settled_deliveries_are_acknowledged_in_one_frame_never_ahead_of_one_in_hand(
    amqp: AbstractRobustConnection,
) -> None:
    channel = await amqp.channel()
    name, messages = await delivered(channel, 6)
    sent = spy_on_acks(messages[0])
    acks = AckRuns(flush_seconds=60)
    for message in messages:
        acks.received(message)

    await acks.ack(messages[2])
    await acks.ack(messages[1])
    assert sent == []  # the first is still in hand
    await acks.ack(messages[0])
    assert sent == [(messages[2].delivery_tag, True)]

    await acks.nack(messages[3], requeue=True)
    await acks.ack(messages[5])  # the fifth is still in hand
    assert sent == [(messages[2].delivery_tag, True)]
    assert acks.settled(messages[5])
    assert not acks.settled(messages[4])

    await channel.close()
    # Back in the queue: the one requeued, the one in hand, and the one acknowledged
    # after it, whose acknowledgement was still waiting for its run.
    assert await back_in_queue(amqp, name) == 3


async def test_an_acknowledgement_held_up_by_a_delivery_in_hand_goes_alone_after_a_while(
    amqp: AbstractRobustConnection,
) -> None:
    channel = await amqp.channel()
    name, messages = await delivered(channel, 3)
    sent = spy_on_acks(messages[0])
    acks = AckRuns(flush_seconds=0.05)
    for message in messages:
        acks.received(message)

    await acks.ack(messages[1])
    await acks.ack(messages[2])
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.02)
    assert sent == [(messages[1].delivery_tag, False), (messages[2].delivery_tag, False)]

    # The first, settled at last, runs on past the two already acknowledged.
    await acks.ack(messages[0])
    assert sent[2:] == [(messages[0].delivery_tag, True)]
    await channel.close()
    assert await back_in_queue(amqp, name) == 0
