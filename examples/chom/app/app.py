#!/usr/bin/env python3
# A command-line program: what it prints is its output (the lint bans print in the library).
# ruff: noqa: T201
"""The CHOM web app stand-in (the real one is Laravel under PHP-FPM): what nginx proxies to.

    python3 app.py      in a release directory; listens on 127.0.0.1:PORT (PORT from the
                        environment or ./.env, default 8000)

GET /        a small HTML page naming the release
GET /health  200 {"status": "ok", "release": ..., "schema": <latest applied migration>} when the
             database opens, every migration shipped in migrations/ is applied and redis
             answers PING after AUTH with REDIS_PASSWORD; else 503 with "reason".
"""

import html
import http.server
import json
import signal
import socket
import sqlite3
import sys

import appenv


def schema_state(path):
    """(latest applied migration, problem or None). Read-only: a health check never creates
    the database. Only migrations this release ships must be applied: after a rollback the
    previous release runs on a schema one migration ahead, which is what additive migrations
    allow."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            applied = {name for (name,) in db.execute("SELECT name FROM schema_migrations")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        return None, f"database {path}: {exc}"
    latest = max(applied, default=None)
    pending = [m.name for m in appenv.shipped_migrations() if m.name not in applied]
    return latest, f"pending migrations: {', '.join(pending)}" if pending else None


def redis_problem(config):
    """None when redis answers PING (after AUTH when a password is set), else what went wrong.
    The password never appears in the answer."""
    password = config.get("REDIS_PASSWORD", "")
    where = (config.get("REDIS_HOST", "127.0.0.1"), int(config.get("REDIS_PORT", "6379")))
    commands = ([["AUTH", password]] if password else []) + [["PING"]]
    try:
        with socket.create_connection(where, timeout=2) as conn:
            stream = conn.makefile("rwb")
            for words in commands:
                stream.write(f"*{len(words)}\r\n".encode())
                for word in words:
                    data = word.encode()
                    stream.write(b"$%d\r\n%s\r\n" % (len(data), data))
            stream.flush()
            replies = [stream.readline().decode(errors="replace").strip() for _ in commands]
    except OSError as exc:
        return f"redis {where[0]}:{where[1]}: {exc}"
    expected = ["+OK"] * (len(commands) - 1) + ["+PONG"]
    return None if replies == expected else f"redis answered {' / '.join(replies)}"


class Handler(http.server.BaseHTTPRequestHandler):
    config: dict = {}
    release = "?"

    def do_GET(self):
        if self.path == "/health":
            latest, problem = schema_state(appenv.database(self.config))
            problem = problem or redis_problem(self.config)
            body = {"status": "unavailable" if problem else "ok", "release": self.release,
                    "schema": latest, **({"reason": problem} if problem else {})}
            self.answer(503 if problem else 200, "application/json", json.dumps(body) + "\n")
        elif self.path == "/":
            name, release = (html.escape(v) for v in (self.config.get("APP_NAME", "CHOM"), self.release))
            self.answer(200, "text/html; charset=utf-8",
                        f"<!doctype html><title>{name}</title><h1>{name}</h1>"
                        f"<p>release {release}</p>\n")
        else:
            self.answer(404, "text/plain", "not found\n")

    def answer(self, status, kind, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        if self.path != "/health" or code != 200:  # nginx polls /health: log only its failures
            super().log_request(code, size)


def main():
    config = appenv.settings()
    Handler.config, Handler.release = config, appenv.release()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # systemctl stop/restart: exit 0
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    port = int(config.get("PORT", "8000"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"chom app release {Handler.release} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
