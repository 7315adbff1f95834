"""What the CSO stand-ins share: their settings, their command line, HTTP answers, dependency
checks that keep running, and a clean exit on SIGTERM. Python 3 stdlib only (Debian 12's
python3): nothing here is RabbitMQ, Keystone or CSO (see ../README.md).

Settings come from the environment (systemd's EnvironmentFile= puts the rendered env file there)
or, with --config PATH, from that file alone, read as systemd reads it and never sourced.
"""

import argparse
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

RELEASE_DIR = Path(__file__).resolve().parent.parent  # <app root>/releases/<release>
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r"\\(.)")
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
TIMEOUT = 2.0  # every probe of a dependency: a check round never hangs on a dead peer
# Never through a proxy: the stand-ins talk to their neighbours in the VPC (or on loopback).
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Failed(Exception):
    """The program cannot start: the message is the one line it prints (exit status 1)."""


def log(message):
    print(message, flush=True)  # noqa: T201  # stdout is the service's log (journald)


def read_env(path):
    """KEY=value lines as systemd's EnvironmentFile= reads them, which is how deployer renders
    them: KEY="value" (\\" \\\\ \\$ and \\` stand for the character itself), KEY='value' (as is)
    or KEY=value; lines starting with # or ; are comments. Never sourced or evaluated. A quote
    or backslash outside quotes is refused rather than guessed at."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failed(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    values = {}
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip(" \t\r")
        if not stripped or stripped.startswith(("#", ";")):
            continue
        key, eq, value = stripped.partition("=")
        key, value = key.strip(" \t"), value.strip(" \t")
        if not eq or not KEY.fullmatch(key):
            raise Failed(f"{path}:{number}: not KEY=value")
        if quoted := DOUBLE_QUOTED.fullmatch(value):
            value = ESCAPE.sub(lambda m: m[1] if m[1] in '"\\$`' else m[0], quoted[1])
        elif len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]:
            value = value[1:-1]
        elif any(c in value for c in "\"'\\"):
            raise Failed(f"{path}:{number}: {key}: a quote or backslash outside quotes")
        values[key] = value
    return values


def settings(config_path):
    """The file given with --config, alone; without one, the environment (under systemd it
    holds the unit's EnvironmentFile=)."""
    return read_env(config_path) if config_path else dict(os.environ)


def release():
    """The release this code belongs to: DEPLOY_RELEASE when deployer runs it, else the
    release directory's own name (releases/<release>, reached through `current`)."""
    return os.environ.get("DEPLOY_RELEASE") or RELEASE_DIR.name


# --- the command line ---------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")  # one line, for journald and the operator


def port(text):
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return int(text)


def parser(prog, description, default_port):
    p = Parser(prog=prog, description=description)
    p.add_argument("--port", type=port, default=default_port,
                   help=f"port to listen on (default {default_port})")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--config", metavar="PATH",
                   help="read the settings from this env file instead of the environment")
    p.add_argument("--check", action="store_true",
                   help="check the settings, print what they say and exit (0 if usable)")
    return p


# --- settings -------------------------------------------------------------------------------------

def required(config, key):
    value = config.get(key, "").strip()
    if not value:
        raise Failed(f"{key} is not set")
    return value


def address(text, default_port, key):
    """`host` or `host:port` (IPv4 address or DNS name) → (host, port)."""
    host, colon, number = text.rpartition(":") if ":" in text else (text, "", "")
    if colon and not (number.isdigit() and 0 < int(number) < 65536):
        raise Failed(f"{key}: {text!r}: {number!r} is not a TCP port")
    if not HOSTNAME.fullmatch(host):
        raise Failed(f"{key}: {text!r} is not an address (host or host:port)")
    return host, int(number) if colon else default_port


def addresses(config, key, default_port, *, optional=False):
    """A space-separated list of addresses, duplicates dropped, in order."""
    words = config.get(key, "").split()
    if not words and not optional:
        raise Failed(f"{key} is not set")
    found = []
    for word in words:
        where = address(word, default_port, key)
        if where not in found:
            found.append(where)
    return found


def urls(config, key):
    """A space-separated list of http(s) URLs; at least one."""
    found = []
    for word in required(config, key).split():
        parts = urllib.parse.urlsplit(word)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Failed(f"{key}: {word!r} is not an http:// URL")
        try:
            address(parts.netloc, 80, key)
        except Failed:
            raise Failed(f"{key}: {word!r} is not an http:// URL") from None
        if word not in found:
            found.append(word)
    return found


def interval(config):
    text = config.get("CHECK_INTERVAL", "5")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0
    if not 0 < seconds <= 3600:
        raise Failed(f"CHECK_INTERVAL: {text!r} is not a number of seconds (0 < s <= 3600)")
    return seconds


def is_local(host):
    """True when `host` is one of this machine's addresses: it can be bound."""
    try:
        ip = socket.gethostbyname(host)
        with socket.socket() as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


# --- probes ----------------------------------------------------------------------------------------

def http_get(url, timeout=TIMEOUT):
    """(status, body) of a GET; OSError when nothing answers."""
    try:
        with OPENER.open(url, timeout=timeout) as answer:
            return answer.status, answer.read(1 << 16).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1 << 16).decode("utf-8", "replace")


def get_json(url, timeout=TIMEOUT):
    """(status, JSON document or None); OSError (URLError included) when nothing answers."""
    status, body = http_get(url, timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def reason(exc):
    """A short why for a failed probe: 'Connection refused', 'timed out'."""
    inner = getattr(exc, "reason", exc)
    return getattr(inner, "strerror", None) or str(inner) or type(inner).__name__


class Dependencies:
    """Groups of targets, re-checked every `every` seconds in a thread. A group is up when one
    of its targets answers (in HA either of two peers will do); the whole is healthy when every
    group is up. Each target's result is logged at the first check and whenever it changes, so
    the log shows every transition without repeating itself every few seconds.

    groups: {name: [(label, probe)]}, where probe() returns (ok, detail)."""

    def __init__(self, groups, every):
        self.groups, self.every = groups, every
        self.results = {}  # (group, label) → (ok, detail)
        self.lock = threading.Lock()
        self.checked = threading.Event()

    def start(self):
        threading.Thread(target=self._loop, name="dependency checks", daemon=True).start()

    def check_once(self):
        for group, targets in self.groups.items():
            for label, probe in targets:
                try:
                    result = probe()
                except Exception as exc:  # a probe's bug must not end the loop
                    result = (False, f"check failed: {exc}")
                with self.lock:
                    before = self.results.get((group, label))
                    self.results[(group, label)] = result
                if before is None or before != result:
                    log(f"dependency {group} {label}: {'ok' if result[0] else 'unavailable'}"
                        f" ({result[1]})")
        self.checked.set()

    def _loop(self):
        stop = threading.Event()  # never set: the thread dies with the process
        while True:
            self.check_once()
            stop.wait(self.every)

    def state(self):
        """(healthy, {group: {label: "ok" or why}}, reason or None), from the latest round."""
        with self.lock:
            results = dict(self.results)
        if not self.checked.is_set():
            return False, {}, "dependencies not checked yet"
        report, down = {}, []
        for group, targets in self.groups.items():
            entries = {label: "ok" if results[(group, label)][0] else results[(group, label)][1]
                       for label, _ in targets}
            report[group] = entries
            if not any(results[(group, label)][0] for label, _ in targets):
                down.append(f"{group}: " + "; ".join(f"{label} {why}" for label, why in entries.items()))
        return not down, report, "; ".join(down) or None


# --- serving ---------------------------------------------------------------------------------------

def http_server(where, routes):
    """A threading HTTP server answering GET on `routes` ({path: fn(handler) → (status,
    content type, text)}); anything else is 404 with a JSON body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "cso-standin"

        def do_GET(self):
            route = routes.get(self.path.split("?", 1)[0])
            if route:
                status, kind, text = route(self)
            else:
                status, kind, text = 404, "application/json", json.dumps(
                    {"error": "Object Not Found", "reason": "Not Found"}) + "\n"
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass  # health checks poll often: the start and dependency lines are the log

    return listen(http.server.ThreadingHTTPServer, where, Handler)


def listen(server_class, where, handler):
    class Server(server_class):
        allow_reuse_address = True
        daemon_threads = True

    try:
        return Server(where, handler)
    except OSError as exc:
        raise Failed(f"cannot listen on {where[0]}:{where[1]}: {exc.strerror or exc}") from None


def answer_json(status, document):
    return status, "application/json", json.dumps(document) + "\n"


def on_sigterm_exit():
    """systemctl stop sends SIGTERM: leave through SystemExit, so the exit status is 0."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve(main_server, *others):
    """Serve the others in threads and the main one here, until SIGTERM."""
    for server in others:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    main_server.serve_forever()


def fail(prog, exc):
    print(f"{prog}: {exc}", file=sys.stderr, flush=True)  # noqa: T201
    return 1
