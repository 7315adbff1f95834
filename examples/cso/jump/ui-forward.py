#!/usr/bin/env python3
"""The jump's Admin UI forwarder, for the single topology: there is no load balancer, so the
jump (the one machine with a public address) passes TCP port 8102 to the first frontend. A
plain TCP relay: bytes go through untouched, nothing is terminated or authenticated (the HA
topology's load balancer and Cognito are not emulated).

    python3 jump/ui-forward.py [--port 8102] [--bind 0.0.0.0] [--config PATH] [--check]

Settings (environment, or the --config file): FRONTEND, the frontend's `address[:port]` (port
8102 by default).

Logs one line at start and one on the frontend's reachability then (a TCP connection), and a
line for each client it cannot serve (frontend unreachable, too many connections). At most 256
connections at once.

Exit status: 0 on SIGTERM (and --check with usable settings), 1 when it cannot start (bad
settings, port taken), 2 on a usage error.
"""

import socket
import socketserver
import sys
import threading
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the release (or a read-only checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import csolib  # noqa: E402

PROG = "jump/ui-forward.py"
MAX_CONNECTIONS = 256
CONNECT_TIMEOUT = 5.0


def pump(source, sink):
    """Copy until end of input, then pass the end on (half-close); on an error, end both ways
    so the other direction's pump stops too."""
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def forwarder(where, target):
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    class Forward(socketserver.BaseRequestHandler):
        def handle(self):
            client = f"{self.client_address[0]}:{self.client_address[1]}"
            if not slots.acquire(blocking=False):
                csolib.log(f"connection from {client} refused: {MAX_CONNECTIONS} already open")
                return
            try:
                try:
                    upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
                except OSError as exc:
                    csolib.log(f"connection from {client}: frontend {target[0]}:{target[1]}"
                               f" unreachable ({csolib.reason(exc)})")
                    return
                with upstream:
                    upstream.settimeout(None)
                    back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
                    back.start()
                    pump(self.request, upstream)
                    back.join()
            finally:
                slots.release()

    return csolib.listen(socketserver.ThreadingTCPServer, where, Forward)


def check_frontend(target):
    """Once, at start: the log says whether the frontend accepts connections yet."""
    try:
        with socket.create_connection(target, timeout=csolib.TIMEOUT):
            pass
    except OSError as exc:
        csolib.log(f"dependency frontend {target[0]}:{target[1]}: unavailable ({csolib.reason(exc)});"
                   " clients are forwarded once it answers")
        return
    csolib.log(f"dependency frontend {target[0]}:{target[1]}: ok (accepts connections)")


def main(argv=None):
    args = csolib.parser(PROG, "Forward the Admin UI port to the first frontend.", 8102
                         ).parse_args(argv)
    try:
        config = csolib.settings(args.config)
        target = csolib.address(csolib.required(config, "FRONTEND"), 8102, "FRONTEND")
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    summary = f"forwarding to the frontend at {target[0]}:{target[1]}"
    if args.check:
        csolib.log(f"ui-forward settings ok: {summary}")
        return 0
    csolib.on_sigterm_exit()
    try:
        server = forwarder((args.bind, args.port), target)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    csolib.log(f"ui-forward listening on {args.bind}:{args.port}, {summary}")
    threading.Thread(target=check_frontend, args=(target,), daemon=True).start()
    csolib.serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
