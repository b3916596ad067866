"""The channels gRPC calls are proxied over to function instances (one HTTP/2 channel per
instance, shared by its calls), and the platform's metadata on each call.

Messages pass as raw bytes: nvcf-lite never needs a function's protobuf definitions. grpcio is
imported on the first call (it costs ~20 MB and ~0.1 s, which a server without gRPC functions
need not pay).
"""

from __future__ import annotations

import asyncio
from typing import Any

from nvcf_lite.domain.tickets import Ticket
from nvcf_lite.workers.instances import Instance

MAX_MESSAGE = -1  # no size limit on proxied messages (NVCF: "no request size limit")
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


class GrpcChannels:
    """One channel per instance (its id, address and port: 127.0.0.1, or a Swarm node's),
    made on its first call; the oldest are closed past `keep` (an instance gone leaves an idle
    channel until then)."""

    def __init__(self, keep: int = 64) -> None:
        self._channels: dict[tuple[str, str, int], Any] = {}  # grpc.aio.Channel
        self._keep = keep
        self._closing: set[asyncio.Task[None]] = set()

    def channel(self, instance_id: str, port: int, address: str = "127.0.0.1") -> Any:
        key = (instance_id, address, port)
        found = self._channels.get(key)
        if found is None:
            import grpc.aio

            found = grpc.aio.insecure_channel(f"{address}:{port}", options=CHANNEL_OPTIONS)
            self._channels[key] = found
            while len(self._channels) > self._keep:
                oldest = next(iter(self._channels))
                self._close_later(self._channels.pop(oldest))
        return found

    def _close_later(self, channel: Any) -> None:
        task = asyncio.ensure_future(channel.close(grace=None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)


def platform_metadata(ticket: Ticket, inst: Instance) -> list[tuple[str, str]]:
    """The NVCF request headers (§4.3) as metadata of a proxied call (names lower-case)."""
    rec = ticket.record
    return [
        ("nvcf-reqid", rec.request_id),
        ("nvcf-sub", ticket.subject),
        ("nvcf-ncaid", rec.nca_id),
        ("nvcf-function-id", rec.function_id),
        ("nvcf-function-version-id", rec.version_id),
        ("nvcf-function-name", inst.function_name),
        ("nvcf-instancetype", inst.instance_type),
        ("nvcf-backend", "local"),
        ("nvcf-region", "local"),
        ("nvcf-env", "local"),
    ]
