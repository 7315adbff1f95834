#!/usr/bin/env python3
"""The RabbitMQ stand-in of CSO's rabbitmq role. Nothing here is RabbitMQ: no AMQP, no queues.
It answers the two management-API calls deployer and an operator check, in RabbitMQ's shape,
and makes "clustered in HA" a real TCP reachability between the two machines.

    python3 rabbitmq/server.py [--port 15672] [--cluster-port 25672] [--bind 0.0.0.0]
                               [--config PATH] [--check]

Settings (environment, or the --config file): RABBITMQ_NODES, the cluster's members as
space-separated `address[:cluster port]` (this node among them; absent: a single node),
CHECK_INTERVAL (seconds between peer checks, default 5).

HTTP (--port, RabbitMQ's management port):
  GET /api/health/checks/alarms  200 {"status": "ok"}
  GET /api/nodes                 200 [{"name": "rabbit@<address>", "running": true, ...}, ...]:
                                 this node, then each peer, running while it answers on its
                                 cluster port
Cluster port (--cluster-port, Erlang distribution's port on RabbitMQ): every stand-in listens
there and greets with one line, `cso-rabbitmq-standin rabbit@<address>`; peers probe it.

Exit status: 0 on SIGTERM (and --check with usable settings), 1 when it cannot start (bad
settings, port taken), 2 on a usage error.
"""

import socket
import socketserver
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the release (or a read-only checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import csolib  # noqa: E402

PROG = "rabbitmq/server.py"
GREETING = "cso-rabbitmq-standin"
CLUSTER_PORT = 25672  # Erlang distribution's port on a RabbitMQ node


def node_name(where):
    """rabbit@<address>, with the cluster port when it is not the usual one (two stand-ins on
    one machine, as in the tests)."""
    host, port = where
    return f"rabbit@{host}" if port == CLUSTER_PORT else f"rabbit@{host}:{port}"


def cluster(config, cluster_port):
    """(this node's name, [(peer address, port)], whether this node is missing from the list):
    this node is the RABBITMQ_NODES entry with one of this machine's addresses and this node's
    cluster port."""
    nodes = csolib.addresses(config, "RABBITMQ_NODES", CLUSTER_PORT, optional=True)
    me = next(((h, p) for h, p in nodes if p == cluster_port and csolib.is_local(h)), None)
    if me is None:
        return node_name((socket.gethostname(), cluster_port)), nodes, bool(nodes)
    return node_name(me), [n for n in nodes if n != me], False


def peer_probe(where):
    """A peer is up when its cluster port answers with a stand-in's greeting."""
    def probe():
        try:
            with socket.create_connection(where, timeout=csolib.TIMEOUT) as conn:
                conn.settimeout(csolib.TIMEOUT)
                line = conn.makefile("rb").readline(256).decode("utf-8", "replace").strip()
        except OSError as exc:
            return False, f"{where[0]}:{where[1]} {csolib.reason(exc)}"
        if not line.startswith(GREETING + " "):
            return False, f"{where[0]}:{where[1]} answered {line[:60]!r}, not a cluster peer"
        return True, f"{where[0]}:{where[1]} is {line.split(' ', 1)[1]}"
    return probe


def cluster_listener(where, name):
    greeting = f"{GREETING} {name}\n".encode()

    class Greet(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                self.request.sendall(greeting)
            except OSError:
                pass  # the peer went away first: nothing to do

    return csolib.listen(socketserver.ThreadingTCPServer, where, Greet)


def main(argv=None):
    p = csolib.parser(PROG, "The RabbitMQ stand-in (management API and cluster reachability).",
                      15672)
    p.add_argument("--cluster-port", type=csolib.port, default=CLUSTER_PORT,
                   help="the port peers probe (default 25672)")
    args = p.parse_args(argv)
    if args.cluster_port == args.port:
        p.error("--cluster-port must differ from --port")
    try:
        config = csolib.settings(args.config)
        name, peers, outsider = cluster(config, args.cluster_port)
        every = csolib.interval(config)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    peer_names = [node_name(w) for w in peers]
    summary = (f"node {name}{' (this machine is not among RABBITMQ_NODES)' if outsider else ''},"
               f" peers: {', '.join(peer_names) or 'none (a single node)'}")
    if args.check:
        csolib.log(f"rabbitmq settings ok: {summary}")
        return 0
    deps = csolib.Dependencies({"peer": [(n, peer_probe(w)) for n, w in zip(peer_names, peers,
                                                                             strict=True)]}, every)
    started = time.monotonic()

    def nodes(_):
        _, report, _ = deps.state()
        peer_state = report.get("peer", {})
        members = [{"name": name, "type": "disc", "running": True, "partitions": [],
                    "uptime": int((time.monotonic() - started) * 1000)}]
        members += [{"name": n, "type": "disc", "running": peer_state.get(n) == "ok",
                     "partitions": []} for n in peer_names]
        return csolib.answer_json(200, members)

    routes = {"/api/health/checks/alarms": lambda _: csolib.answer_json(200, {"status": "ok"}),
              "/api/nodes": nodes}
    csolib.on_sigterm_exit()
    try:
        web = csolib.http_server((args.bind, args.port), routes)
        peer_port = cluster_listener((args.bind, args.cluster_port), name)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    csolib.log(f"rabbitmq stand-in release {csolib.release()} listening on {args.bind}:{args.port}"
               f" (management) and {args.bind}:{args.cluster_port} (cluster): {summary}")
    if peers:
        deps.start()
    csolib.serve(web, peer_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
