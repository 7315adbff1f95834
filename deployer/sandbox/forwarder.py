"""A TCP forwarder from this machine's namespace into a sandbox machine's network namespace.

    python -m deployer.sandbox.forwarder 127.0.177.1 /run/netns/dmab12cd-jump 10.77.0.1 22 8080

It listens on LISTEN_ADDRESS:PORT for every PORT given (a loopback address: the machine's
"public address"; 22 and the ports its security groups open) and, for each connection, dials
TARGET_ADDRESS:PORT from INSIDE the machine's network namespace, then relays bytes both ways.
The dialling happens on a thread of its own that has entered the namespace (setns(2) changes
the calling thread only), and a socket keeps the namespace it was created in, so the host side
needs no address routable to the machine and nothing else in this process ever leaves loopback.

    python -m deployer.sandbox.forwarder --balance 127.0.12.7 8102 .deployer/sandbox/balancers/x.json

is a load balancer's listener (deployer/sandbox/balancers.py): it listens on LISTEN_ADDRESS:PORT
and hands each connection to the next target of TARGETS_FILE (round robin), dialled the same way
from inside the target's own namespace; a target that does not answer at once (its machine is
stopped: its namespace is gone; or nothing listens) is skipped for the next one. The file is read
for every connection, so its writer changes the targets without a restart. Bytes pass through:
TLS, when there is any, is the target's.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import socket
import sys
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000  # <sched.h>; os.CLONE_NEWNET exists only from Python 3.12
_BUFFER = 65536


def enter_netns(path: str | Path) -> None:
    """Move the calling thread (only it) into the network namespace bound at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python >= 3.12
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def connect_in_netns(netns: str | Path, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to address:port made from inside `netns`, usable from any thread.

    A throwaway thread enters the namespace, so the caller's own thread stays where it is.
    """
    outcome: dict[str, object] = {}

    def dial() -> None:
        try:
            enter_netns(netns)
            outcome["socket"] = socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=dial, daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]  # an OSError from the dialling thread
    sock = outcome["socket"]
    assert isinstance(sock, socket.socket)
    sock.settimeout(None)
    return sock


def ssh_banner_in_netns(netns: str | Path, address: str, port: int = 22, timeout: float = 1.0) -> bool:
    """sshd answers at address:port inside `netns` (its banner arrives)."""
    try:
        with connect_in_netns(netns, address, port, timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_BUFFER):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, netns: str, address: str, port: int) -> None:
    try:
        upstream = connect_in_netns(netns, address, port, timeout=5.0)
    except OSError:
        client.close()  # the machine is not (yet) listening: the client sees a closed connection
        return
    _splice(client, upstream)


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept(server: socket.socket, netns: str, address: str, port: int) -> None:
    while True:
        client, _ = server.accept()
        threading.Thread(target=_relay, args=(client, netns, address, port), daemon=True).start()


def serve(listen_address: str, ports: list[int], netns: str, address: str) -> None:
    """Bind every port first (a port that cannot be bound stops the forwarder, naming it), then
    relay each on a thread of its own."""
    if not listen_address.startswith("127."):
        raise SystemExit(f"the forwarder listens on loopback only, not {listen_address}")
    servers = []
    for port in ports:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((listen_address, port))
        except OSError as exc:
            raise SystemExit(f"cannot listen on {listen_address}:{port}: {exc}") from exc
        server.listen(128)
        servers.append((server, port))
    threads = [threading.Thread(target=_accept, args=(server, netns, address, port), daemon=True)
               for server, port in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_targets(path: str | Path) -> list[dict]:
    """The targets a balancing forwarder hands connections to: [{netns, address, port}, ...];
    none when the file is missing or half-written (its writer replaces it whole)."""
    try:
        targets = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [t for t in targets if isinstance(t, dict) and {"netns", "address", "port"} <= t.keys()]


def rotated(targets: list[dict], turn: int) -> list[dict]:
    """Round robin: the order in which connection number `turn` tries the targets.

    >>> rotated([{"a": 1}, {"a": 2}, {"a": 3}], 4)
    [{'a': 2}, {'a': 3}, {'a': 1}]
    """
    if not targets:
        return []
    start = turn % len(targets)
    return targets[start:] + targets[:start]


def _relay_balanced(client: socket.socket, targets: list[dict]) -> None:
    for target in targets:
        try:
            upstream = connect_in_netns(target["netns"], target["address"], int(target["port"]),
                                        timeout=2.0)
        except OSError:
            continue  # stopped (no namespace), refused or silent: the next target
        _splice(client, upstream)
        return
    client.close()  # no target answered: the client sees a closed connection


def serve_balanced(listen_address: str, port: int, targets_file: str) -> None:
    """Listen on listen_address:port; relay each connection to the next target that answers."""
    if not listen_address.startswith("127."):
        raise SystemExit(f"the forwarder listens on loopback only, not {listen_address}")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((listen_address, port))
    except OSError as exc:
        raise SystemExit(f"cannot listen on {listen_address}:{port}: {exc}") from exc
    server.listen(128)
    for turn in itertools.count():
        client, _ = server.accept()
        order = rotated(read_targets(targets_file), turn)
        threading.Thread(target=_relay_balanced, args=(client, order), daemon=True).start()


def main(argv: list[str]) -> int:
    """`forwarder LISTEN_ADDRESS NETNS_PATH TARGET_ADDRESS PORT [PORT...]`, or
    `forwarder --balance LISTEN_ADDRESS PORT TARGETS_FILE`."""
    if argv[:1] == ["--balance"]:
        _, listen_address, port, targets_file = argv
        serve_balanced(listen_address, int(port), targets_file)
        return 0
    listen_address, netns, address, *ports = argv
    serve(listen_address, [int(p) for p in ports], netns, address)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
