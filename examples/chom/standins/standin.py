#!/usr/bin/env python3
# A command-line program: what it prints is its output (the lint bans print in the library).
# ruff: noqa: T201
"""Stand-ins for the services of CHOM's servers, for machines that cannot download them.

    standin.py SERVICE [--port N] [--bind ADDR] [--config PATH] [--password-file PATH]

SERVICE is one of prometheus, grafana, loki, promtail, alertmanager, node-exporter, redis. Each
answers the endpoints deployer and the operators check, in the real service's shape, and does
nothing else: nothing here is Prometheus, Grafana or Redis (see ../README.md). Defaults: the
real service's port, bind 0.0.0.0. Prints one line when it starts (journald keeps it); exits 0
on SIGTERM, 1 when it cannot start (port taken, config or password file unusable), 2 on usage.
"""

import argparse
import hmac
import http.server
import json
import os
import re
import signal
import socketserver
import sys
import threading

PORTS = {"prometheus": 9090, "grafana": 3000, "loki": 3100, "promtail": 9080,
         "alertmanager": 9093, "node-exporter": 9100, "redis": 6379}
# Prometheus durations: 30d, 1y, 12h30m ...
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
RETENTION = re.compile(r"""^\s*retention:\s*["']?([^"'\s#]*)["']?\s*(#.*)?$""", re.M)


class Failed(Exception):
    """The stand-in cannot start (or reload): the message is the one line it prints."""


# --- prometheus: its config is read at start and again on SIGHUP (systemctl reload) ----------

class PrometheusConfig:
    def __init__(self, path):
        self.path, self.retention, self.text = path, "15d", ""  # 15d: Prometheus' default
        if path:
            self.load()

    def load(self):
        """Read the file whole, then swap: a bad file leaves the running config as it was,
        as Prometheus does on a failed reload."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise Failed(f"prometheus: cannot read {self.path}: {exc.strerror}") from None
        found = RETENTION.search(text)
        retention = found[1] if found else "15d"
        if not DURATION.fullmatch(retention):
            raise Failed(f"prometheus: {self.path}: retention {retention!r} is not a duration")
        self.retention, self.text = retention, text

    def reload(self, *_):
        try:
            self.load()
            print(f"prometheus: reloaded {self.path}, retention {self.retention}", flush=True)
        except Failed as exc:
            print(f"{exc}; keeping the running config", flush=True)


def prometheus_routes(args):
    config = PrometheusConfig(args.config)
    signal.signal(signal.SIGHUP, config.reload)
    return {
        "/-/healthy": lambda: (200, "text/plain", "Prometheus Server is Healthy.\n"),
        "/-/ready": lambda: (200, "text/plain", "Prometheus Server is Ready.\n"),
        "/api/v1/status/flags": lambda: (200, "application/json", json.dumps(
            {"status": "success", "data": {"storage.tsdb.retention.time": config.retention}})),
        "/api/v1/status/config": lambda: (200, "application/json", json.dumps(
            {"status": "success", "data": {"yaml": config.text}})),
    }, f"retention {config.retention}"


# --- the other HTTP services ------------------------------------------------------------------

def node_metrics():
    """A few real node_exporter metrics, in Prometheus' text exposition format."""
    with open("/proc/loadavg", encoding="ascii") as f:
        loads = f.read().split()[:3]
    with open("/proc/stat", encoding="ascii") as f:
        boot = next(line.split()[1] for line in f if line.startswith("btime "))
    lines = [("node_boot_time_seconds", "Node boot time, in unixtime.", boot)]
    lines += [(f"node_load{n}", f"{n}m load average.", v) for n, v in zip((1, 5, 15), loads, strict=True)]
    text = "".join(f"# HELP {name} {text}\n# TYPE {name} gauge\n{name} {value}\n"
                   for name, text, value in lines)
    return 200, "text/plain; version=0.0.4; charset=utf-8", text


def plain(text):
    return lambda: (200, "text/plain; charset=utf-8", text)


HTTP = {
    "prometheus": prometheus_routes,
    "grafana": lambda args: ({"/api/health": lambda: (200, "application/json", json.dumps(
        {"commit": "stand-in", "database": "ok", "version": "stand-in"}))}, ""),
    "loki": lambda args: ({"/ready": plain("ready\n")}, ""),
    "promtail": lambda args: ({"/ready": plain("Ready\n")}, ""),
    "alertmanager": lambda args: ({"/-/healthy": plain("OK\n")}, ""),
    "node-exporter": lambda args: ({"/metrics": node_metrics}, ""),
}


def http_server(address, routes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path.split("?", 1)[0])
            status, kind, text = route() if route else (404, "text/plain", "404 page not found\n")
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass  # health checks poll often; the start line is what journald needs

    return http.server.ThreadingHTTPServer(address, Handler)


# --- redis: enough RESP for AUTH, PING, SET and GET -----------------------------------------

MAX_ARGS, MAX_BULK = 64, 1 << 20  # a stand-in has no business with large requests


def read_command(rfile):
    """One command as a list of bytes: a RESP array of bulk strings (what clients send) or an
    inline line (`PING` typed into nc). None at end of input; ValueError when malformed."""
    line = rfile.readline(MAX_BULK)
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    count = int(line[1:])
    if not 0 <= count <= MAX_ARGS:
        raise ValueError("invalid multibulk length")
    words = []
    for _ in range(count):
        head = rfile.readline(64)
        if not head.startswith(b"$") or not 0 <= int(head[1:]) <= MAX_BULK:
            raise ValueError("expected '$' and a valid bulk length")
        data = rfile.read(int(head[1:]) + 2)
        if not data.endswith(b"\r\n"):
            raise ValueError("bulk string not terminated")
        words.append(data[:-2])
    return words


def bulk(value):
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def redis_server(address, password):
    store, lock = {}, threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            authed = password is None
            while True:
                try:
                    words = read_command(self.rfile)
                except ValueError as exc:
                    self.wfile.write(f"-ERR Protocol error: {exc}\r\n".encode())
                    return
                if words is None:
                    return
                if not words:
                    continue
                name, rest = words[0].decode(errors="replace").upper(), words[1:]
                if name == "QUIT":
                    self.wfile.write(b"+OK\r\n")
                    return
                if name == "AUTH":
                    reply, authed = self.auth(rest, authed)
                elif not authed:
                    reply = b"-NOAUTH Authentication required.\r\n"
                else:
                    reply = self.run(name, rest)
                self.wfile.write(reply)

        @staticmethod
        def auth(rest, authed):
            if password is None:
                return (b"-ERR AUTH <password> called without any password configured for the"
                        b" default user. Are you sure your configuration is correct?\r\n", authed)
            if len(rest) == 2 and rest[0] == b"default":  # AUTH username password (Redis 6+)
                rest = rest[1:]
            if len(rest) != 1:
                return b"-ERR wrong number of arguments for 'auth' command\r\n", authed
            if hmac.compare_digest(rest[0], password):
                return b"+OK\r\n", True
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", authed

        @staticmethod
        def run(name, rest):
            if name == "PING" and len(rest) <= 1:
                return bulk(rest[0]) if rest else b"+PONG\r\n"
            if name == "SET" and len(rest) == 2:
                with lock:
                    store[rest[0]] = rest[1]
                return b"+OK\r\n"
            if name == "GET" and len(rest) == 1:
                with lock:
                    return bulk(store.get(rest[0]))
            if name in ("PING", "SET", "GET"):
                return f"-ERR wrong number of arguments for '{name.lower()}' command\r\n".encode()
            return f"-ERR unknown command '{name[:64]}'\r\n".encode()

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    return Server(address, Handler)


def read_password(path):
    """The password file must be the service's alone (0600 or 0400): a secret others can read
    is refused rather than served. A trailing newline is not part of the password."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            data = f.read().rstrip(b"\r\n")
    except OSError as exc:
        raise Failed(f"redis: cannot read the password file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise Failed(f"redis: the password file {path} is mode {mode:04o}; make it 0600")
    if not data:
        raise Failed(f"redis: the password file {path} is empty")
    return data


# --- the command line ---------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"standin.py: {message}\n")  # one line, for journald and the operator


def port(text):
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return int(text)


def main(argv=None):
    parser = Parser(prog="standin.py", description="Stand-ins for CHOM's services.")
    parser.add_argument("service", metavar="SERVICE", choices=sorted(PORTS),
                        help=", ".join(sorted(PORTS)))
    parser.add_argument("--port", type=port, help="default: the real service's port")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--config", help="prometheus only: its config file (re-read on SIGHUP)")
    parser.add_argument("--password-file", help="redis only: the password clients must AUTH with")
    args = parser.parse_args(argv)
    if args.config and args.service != "prometheus":
        parser.error(f"--config is for prometheus, not {args.service}")
    if args.password_file and args.service != "redis":
        parser.error(f"--password-file is for redis, not {args.service}")
    address = (args.bind, args.port or PORTS[args.service])
    # systemctl stop sends SIGTERM: leave through SystemExit, so the exit status is 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.service == "redis":
            password = read_password(args.password_file) if args.password_file else None
            server = redis_server(address, password)
            detail = "password required" if password else "no password"
        else:
            routes, detail = HTTP[args.service](args)
            server = http_server(address, routes)
    except Failed as exc:
        print(f"standin.py: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"standin.py: {args.service}: cannot listen on {address[0]}:{address[1]}: {exc.strerror}",
              file=sys.stderr)
        return 1
    print(f"{args.service} stand-in listening on {address[0]}:{address[1]}"
          + (f" ({detail})" if detail else ""), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
