"""Hosts on switches, on this machine: network namespaces joined by veth pairs to Linux bridges, for tests of
what a network partition does (needs root and iproute2).

A ``Lab`` makes ``Switch``es (a Linux bridge in the root namespace with a /24 of its own, the root namespace
at .1) and ``Host``s (a namespace with one veth per switch it is plugged into). ``Host.cut`` shuts the host's
switch port: the host sees its carrier go and its packets dropped, the other side sees silence, as when a
cable or a switch port fails; established TCP connections are not reset on either side, they just stop
hearing, and ``Host.heal`` lets them carry on. (A tc or netfilter drop would leave the carrier up; neither
is available on every kernel, and a switch port going down is the common partition in a data center.)

Services of the root namespace that listen on 127.0.0.1 only (PostgreSQL, a test's Mosquitto) are reached
through ``Switch.expose``: a TCP forwarder in a thread of the test, listening on the switch's address. It
keeps its upstream connection while the host is cut, as the real server's TCP would: the server notices a
lost client only by its own timeouts. An optional tap sees each client's bytes on their way up.

Every name has the lab's random tag, so tests in parallel do not collide; subnets are chosen under a file
lock among those no interface uses. ``close`` (also on failure) kills what still runs in the lab's
namespaces, deletes them (and with them their veths) and the switches.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import random
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ALLOC_LOCK = Path("/tmp/badge-bridge-netns.lock")
POOL = ipaddress.ip_network("10.192.0.0/10")

Tap = Callable[[str], Callable[[bytes], None]]
"""Given a client's address, a function that is handed every chunk that client sends upstream."""


def ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


class Forwarder:
    """TCP from ``listen`` to ``target``, one pair of pump threads per connection."""

    def __init__(self, listen_host: str, target: tuple[str, int], tap: Tap | None = None) -> None:
        self.target = target
        self.tap = tap
        self.server = socket.create_server((listen_host, 0))
        self.port: int = self.server.getsockname()[1]
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"fwd-{self.port}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, (peer, _) = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets |= {client, upstream}
            feed = self.tap(peer) if self.tap is not None else None
            threading.Thread(target=self._pump, args=(client, upstream, feed), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, feed: Callable[[bytes], None] | None) -> None:
        try:
            while chunk := src.recv(65536):
                if feed is not None:
                    feed(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):  # one side gone: so is the other (as a closed socket would tell the peer)
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone would not, on Linux)
        self.server.close()
        with self.lock:
            for s in self.sockets:
                s.close()


class Switch:
    def __init__(self, lab: Lab, name: str, device: str, subnet: ipaddress.IPv4Network) -> None:
        self.lab = lab
        self.name = name
        self.device = device
        self.subnet = subnet
        self.gateway = str(subnet.network_address + 1)
        """The root namespace's address on this switch."""
        self._hosts = itertools.count(2)

    def next_address(self) -> str:
        return str(self.subnet.network_address + next(self._hosts))

    def expose(self, port: int, host: str = "127.0.0.1", tap: Tap | None = None) -> int:
        """Make ``host``:``port`` of the root namespace reachable at ``gateway``:<the port returned>."""
        forwarder = Forwarder(self.gateway, (host, port), tap)
        self.lab.forwarders.append(forwarder)
        return forwarder.port


class Host:
    def __init__(self, lab: Lab, name: str, netns: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns
        self.ports: dict[str, str] = {}
        """Switch name -> this host's veth end in the root namespace (its switch port)."""
        self.addresses: dict[str, str] = {}
        """Switch name -> this host's address on it."""

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` to run inside this host (``ip netns exec`` execs it: the process is the command itself)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(argv), **kwargs)

    def cut(self, *switches: str) -> None:
        """Shut this host's port on ``switches`` (default: all of them)."""
        for name in switches or self.ports:
            ip("link", "set", self.ports[name], "down")

    def heal(self, *switches: str) -> None:
        for name in switches or self.ports:
            ip("link", "set", self.ports[name], "up")


class Lab:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.switches: dict[str, Switch] = {}
        self.hosts: dict[str, Host] = {}
        self.forwarders: list[Forwarder] = []
        self._ports = itertools.count(1)

    def switch(self, name: str) -> Switch:
        device = f"bbs{self.tag}{len(self.switches)}"
        with ALLOC_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the check and the claim of a subnet are one step for every lab
            subnet = self._free_subnet()
            ip("link", "add", device, "type", "bridge")
            self.switches[name] = Switch(self, name, device, subnet)
            ip("addr", "add", f"{self.switches[name].gateway}/24", "dev", device)
        ip("link", "set", device, "up")
        return self.switches[name]

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        used = [ipaddress.ip_interface(word).network for line in ip("-o", "-4", "addr", "show").splitlines()
                for word in line.split()[3:4]]
        rng = random.SystemRandom()
        while True:
            subnet = ipaddress.ip_network(f"{POOL.network_address + rng.randrange(POOL.num_addresses // 256) * 256}/24")
            if not any(subnet.overlaps(u) for u in used):
                return subnet

    def host(self, name: str, *switches: str) -> Host:
        """A host plugged into ``switches`` (eth0, eth1, ... in that order)."""
        netns = f"bb-{self.tag}-{name}"
        ip("netns", "add", netns)
        host = self.hosts[name] = Host(self, name, netns)
        ip("link", "set", "lo", "up", netns=netns)
        for i, switch_name in enumerate(switches):
            switch = self.switches[switch_name]
            port = f"bbv{self.tag}{next(self._ports)}"
            ip("link", "add", port, "type", "veth", "peer", "name", f"eth{i}", "netns", netns)
            host.ports[switch_name] = port
            address = host.addresses[switch_name] = switch.next_address()
            ip("addr", "add", f"{address}/24", "dev", f"eth{i}", netns=netns)
            ip("link", "set", f"eth{i}", "up", netns=netns)
            ip("link", "set", port, "master", switch.device)
            ip("link", "set", port, "up")
        return host

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()
        for host in self.hosts.values():
            with suppress(RuntimeError):
                for pid in ip("netns", "pids", host.netns).split():  # only processes of our own namespaces
                    with suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with suppress(RuntimeError):
                ip("netns", "del", host.netns)  # deletes its veths, and their switch ports with them
        for switch in self.switches.values():
            with suppress(RuntimeError):
                ip("link", "del", switch.device)


@contextmanager
def lab() -> Iterator[Lab]:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()
