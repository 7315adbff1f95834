#!/usr/bin/env python3
"""The frontend stand-in of CSO's frontend role: a stand-in page where the Admin UI would be.
Nothing here is CSO's Admin UI.

    python3 frontend/server.py [--port 8102] [--bind 0.0.0.0] [--config PATH] [--check]

Plain HTTP. In HA the load balancer terminates TLS (HTTPS:8102, behind Cognito) and speaks HTTP
to the frontends; in the single topology the jump forwards port 8102 as it is
(jump/ui-forward.py), so the stand-in UI is plain HTTP end to end there. The real frontend
serves HTTPS with the internal certificates, which are not emulated.

Settings (environment, or the --config file): BACKEND_URL (the backend's /health URL; in HA one
per backend host, space-separated), TOPOLOGY (single or ha), CHECK_INTERVAL (seconds between
checks, default 5).

It checks the backend at start and again every CHECK_INTERVAL seconds, logging each URL's result
the first time and whenever it changes; the backend is up when one BACKEND_URL answers 200.

HTTP:
  GET /        200 the Admin UI stand-in page, naming the release and the topology
  GET /health  200 {"status": "ok", "release": ..., "topology": ..., "checks": {...}} while the
               backend answers (latest check); else 503 {"status": "unavailable", ..., "reason"}

Exit status: 0 on SIGTERM (and --check with usable settings), 1 when it cannot start (bad
settings, port taken), 2 on a usage error.
"""

import html
import ssl
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the release (or a read-only checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import csolib  # noqa: E402

PROG = "frontend/server.py"
TOPOLOGIES = ("single", "ha")


def backend_probe(url):
    def probe():
        try:
            status, doc = csolib.get_json(url)
        except OSError as exc:
            return False, csolib.reason(exc)
        if status == 200:
            return True, "backend healthy"
        why = doc.get("reason") if isinstance(doc, dict) else None
        return False, f"answered {status}" + (f": {why}" if why else "")
    return probe


def page(release, topology, ok):
    release, topology = html.escape(release), html.escape(topology)
    state = "backend answering" if ok else "backend not answering"
    return (f"<!doctype html><title>CSO Admin UI (stand-in)</title>"
            f"<h1>CSO Admin UI (stand-in)</h1>"
            f"<p>release <b>{release}</b>, topology <b>{topology}</b>, {state}</p>"
            f"<p>A stand-in page: nothing here is CSO's Admin UI.</p>\n")


def tls(web, config):
    """HTTPS when TLS_CERT_FILE and TLS_KEY_FILE are set (the certificate deployer generated,
    the same the load balancer serves: the balancer talks HTTPS to its targets, and in the
    single topology the jump server relays TCP straight here); plain HTTP otherwise."""
    cert, key = config.get("TLS_CERT_FILE", ""), config.get("TLS_KEY_FILE", "")
    if not cert and not key:
        return "plain HTTP"
    if not (cert and key):
        raise csolib.Failed("TLS_CERT_FILE and TLS_KEY_FILE go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise csolib.Failed(f"cannot load the TLS certificate and key: {exc}") from None
    web.socket = context.wrap_socket(web.socket, server_side=True)
    return "HTTPS"


def main(argv=None):
    args = csolib.parser(PROG, "The CSO frontend (Admin UI) stand-in.", 8102).parse_args(argv)
    try:
        config = csolib.settings(args.config)
        backends = csolib.urls(config, "BACKEND_URL")
        topology = csolib.required(config, "TOPOLOGY")
        if topology not in TOPOLOGIES:
            raise csolib.Failed(f"TOPOLOGY: {topology!r} is not one of {', '.join(TOPOLOGIES)}")
        every = csolib.interval(config)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    summary = f"topology {topology}, backend {' '.join(backends)}"
    if args.check:
        csolib.log(f"frontend settings ok: {summary}")
        return 0
    deps = csolib.Dependencies({"backend": [(url, backend_probe(url)) for url in backends]}, every)
    release = csolib.release()

    def health(_):
        ok, report, why = deps.state()
        body = {"status": "ok" if ok else "unavailable", "release": release, "topology": topology,
                "checks": report}
        return csolib.answer_json(200, body) if ok else csolib.answer_json(503, {**body, "reason": why})

    routes = {"/health": health,
              "/": lambda _: (200, "text/html; charset=utf-8", page(release, topology, deps.state()[0]))}
    csolib.on_sigterm_exit()
    try:
        web = csolib.http_server((args.bind, args.port), routes)
        scheme = tls(web, config)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    csolib.log(f"frontend stand-in release {release} listening on {args.bind}:{args.port}"
               f" ({scheme}): {summary}, checked every {every:g}s")
    deps.start()
    csolib.serve(web)
    return 0


if __name__ == "__main__":
    sys.exit(main())
