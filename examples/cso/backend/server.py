#!/usr/bin/env python3
"""The backend stand-in of CSO's backend role. Nothing here is CSO's backend: it does no work.
It is healthy exactly when what the real backend needs first answers: Keystone and RabbitMQ.

    python3 backend/server.py [--port 8080] [--bind 0.0.0.0] [--config PATH] [--check]

Settings (environment, or the --config file): KEYSTONE_URL (Keystone's /v3 URL; in HA one per
keystone host, space-separated), RABBITMQ_HOSTS (space-separated `address[:port]`, port 15672 by
default: the management API), CHECK_INTERVAL (seconds between checks, default 5).

It checks its dependencies at start and again every CHECK_INTERVAL seconds, logging each one's
result the first time and whenever it changes. Keystone is up when one KEYSTONE_URL answers 200
with a v3 version document; RabbitMQ is up when one host answers
/api/health/checks/alarms with {"status": "ok"}.

HTTP:
  GET /health  200 {"status": "ok", "release": ..., "checks": {...}} when both are up (latest
               check); else 503 {"status": "unavailable", ..., "reason": ...}
  GET /        200 {"service": "cso-backend (stand-in)", "release": ...}

Exit status: 0 on SIGTERM (and --check with usable settings), 1 when it cannot start (bad
settings, port taken), 2 on a usage error.
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the release (or a read-only checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import csolib  # noqa: E402

PROG = "backend/server.py"


def keystone_probe(url):
    def probe():
        try:
            status, doc = csolib.get_json(url)
        except OSError as exc:
            return False, csolib.reason(exc)
        version = (doc or {}).get("version") if isinstance(doc, dict) else None
        if status == 200 and isinstance(version, dict) and str(version.get("id", "")).startswith("v3"):
            return True, f"Keystone {version['id']}"
        return False, f"answered {status} without a v3 version document"
    return probe


def rabbitmq_probe(host, port):
    url = f"http://{host}:{port}/api/health/checks/alarms"

    def probe():
        try:
            status, doc = csolib.get_json(url)
        except OSError as exc:
            return False, csolib.reason(exc)
        if status == 200 and isinstance(doc, dict) and doc.get("status") == "ok":
            return True, "no alarms"
        return False, f"answered {status} without {{\"status\": \"ok\"}}"
    return probe


def main(argv=None):
    args = csolib.parser(PROG, "The CSO backend stand-in.", 8080).parse_args(argv)
    try:
        config = csolib.settings(args.config)
        keystones = csolib.urls(config, "KEYSTONE_URL")
        rabbits = csolib.addresses(config, "RABBITMQ_HOSTS", 15672)
        every = csolib.interval(config)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    summary = (f"keystone {' '.join(keystones)}, rabbitmq "
               f"{' '.join(f'{h}:{p}' for h, p in rabbits)}")
    if args.check:
        csolib.log(f"backend settings ok: {summary}")
        return 0
    deps = csolib.Dependencies({
        "keystone": [(url, keystone_probe(url)) for url in keystones],
        "rabbitmq": [(f"{h}:{p}", rabbitmq_probe(h, p)) for h, p in rabbits],
    }, every)
    release = csolib.release()

    def health(_):
        ok, report, why = deps.state()
        body = {"status": "ok" if ok else "unavailable", "release": release, "checks": report}
        return csolib.answer_json(200, body) if ok else csolib.answer_json(503, {**body, "reason": why})

    routes = {"/health": health,
              "/": lambda _: csolib.answer_json(200, {"service": "cso-backend (stand-in)",
                                                      "release": release})}
    csolib.on_sigterm_exit()
    try:
        web = csolib.http_server((args.bind, args.port), routes)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    csolib.log(f"backend stand-in release {release} listening on {args.bind}:{args.port}: {summary},"
               f" checked every {every:g}s")
    deps.start()
    csolib.serve(web)
    return 0


if __name__ == "__main__":
    sys.exit(main())
