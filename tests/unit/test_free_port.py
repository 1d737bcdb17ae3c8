"""Ports for the local control plane's servers: never the same one twice, none an outgoing connection may take."""

import socket
from pathlib import Path

from auditwatch.devcluster import cluster
from auditwatch.devcluster.cluster import free_port


def test_ports_are_never_handed_out_twice_and_are_below_the_ephemeral_range():
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports) and all(10000 <= p < ephemeral for p in ports)


def test_a_port_in_use_or_handed_out_before_is_passed_over(monkeypatch):
    with socket.socket() as taken, socket.socket() as closed:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        closed.bind(("127.0.0.1", 0))
        in_use, handed_out, free = taken.getsockname()[1], free_port(), closed.getsockname()[1]
        closed.close()
        tries = iter([in_use, handed_out, free])
        monkeypatch.setattr(cluster.random, "randrange", lambda *_: next(tries))
        assert free_port() == free
