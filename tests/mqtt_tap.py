"""What an MQTT client put on the wire: its CONNECTs and the topics of its PUBLISHes, read from its byte stream
(the forwarder of tests/netns.py hands it over), to tell which of two bridges with one client id did what."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CONNECT, PUBLISH = 1, 3


@dataclass
class Packet:
    client: str
    """The client's address."""
    kind: int
    topic: str
    """A PUBLISH's topic ("" for other packets)."""
    at: float
    """``time.time()`` when the forwarder read it: wall clock, to compare with the database's (same machine)."""


@dataclass
class PublishTap:
    seen: list[Packet] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, client: str) -> Callable[[bytes], None]:
        """A reader of one connection's client-to-broker bytes."""
        buffer = bytearray()

        def feed(chunk: bytes) -> None:
            buffer.extend(chunk)
            while (packet := _take_packet(buffer)) is not None:
                kind, body = packet
                topic = ""
                if kind == PUBLISH and len(body) >= 2:
                    topic = body[2:2 + int.from_bytes(body[:2], "big")].decode(errors="replace")
                with self.lock:
                    self.seen.append(Packet(client, kind, topic, time.time()))

        return feed

    def topics(self, client: str, since: float = 0.0, contains: str = "") -> list[str]:
        """The topics ``client`` published on from ``since`` (``time.time()``) on."""
        with self.lock:
            return [p.topic for p in self.seen
                    if p.client == client and p.kind == PUBLISH and p.at >= since and contains in p.topic]

    def connects(self, client: str, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for p in self.seen if p.client == client and p.kind == CONNECT and p.at >= since)


def _take_packet(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove one whole packet from the front of ``buffer``: (packet type, variable header and payload)."""
    length, multiplier, i = 0, 1, 1
    while True:
        if i >= len(buffer):
            return None
        byte = buffer[i]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    if len(buffer) < i + length:
        return None
    kind, body = buffer[0] >> 4, bytes(buffer[i:i + length])
    del buffer[:i + length]
    return kind, body
