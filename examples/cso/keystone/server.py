#!/usr/bin/env python3
"""The Keystone stand-in of CSO's keystone role. Nothing here is Keystone: no tokens, no users,
no database. It answers the version discovery that clients (and CSO's backend) call first, in
Keystone's shape.

    python3 keystone/server.py [--port 5000] [--bind 0.0.0.0] [--config PATH] [--check]

Settings (environment, or the --config file): DB_HOST (`address[:port]`, port 3306 by default:
the RDS endpoint), DB_NAME (default keystone), DB_USER (default keystone), DB_PASSWORD and
ADMIN_PASSWORD (the bootstrap's admin password), each required. Passwords are never printed.

HTTP:
  GET /      300 {"versions": {"values": [<v3>]}}
  GET /v3    200 {"version": {"id": "v3.14", "status": "stable", "links": ..., "media-types": ...}}
At start it logs one line, then one line on its database: a TCP connection to DB_HOST is tried
(the stand-in speaks no MySQL). From the sandbox RDS cannot be reached: the log says so and the
service answers anyway.

Exit status: 0 on SIGTERM (and --check with usable settings), 1 when it cannot start (bad
settings, port taken), 2 on a usage error.
"""

import socket
import sys
import threading
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the release (or a read-only checkout)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
import csolib  # noqa: E402

PROG = "keystone/server.py"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]


def database(config):
    """(host, port, name, user) of the database setting; Failed when a part is missing."""
    host, port = csolib.address(csolib.required(config, "DB_HOST"), 3306, "DB_HOST")
    csolib.required(config, "DB_PASSWORD")
    csolib.required(config, "ADMIN_PASSWORD")
    return host, port, config.get("DB_NAME") or "keystone", config.get("DB_USER") or "keystone"


def check_database(host, port, name, user):
    where = f"{user}@{host}:{port}/{name}"
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        csolib.log(f"dependency database {where}: unreachable ({csolib.reason(exc)}); RDS is not"
                   " reachable from the sandbox, so this is expected there: keystone answers anyway")
        return
    csolib.log(f"dependency database {where}: TCP reachable (the stand-in speaks no MySQL: no"
               " schema is checked)")


def version(handler, bind):
    host = handler.headers.get("Host") or bind
    return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"http://{host}/v3/"}], "media-types": MEDIA_TYPES}


def main(argv=None):
    args = csolib.parser(PROG, "The Keystone stand-in (version discovery).", 5000).parse_args(argv)
    try:
        db = database(csolib.settings(args.config))
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    summary = f"database {db[3]}@{db[0]}:{db[1]}/{db[2]}, admin password set"
    if args.check:
        csolib.log(f"keystone settings ok: {summary}")
        return 0
    where = f"{args.bind}:{args.port}"
    routes = {
        "/": lambda h: csolib.answer_json(300, {"versions": {"values": [version(h, where)]}}),
        "/v3": lambda h: csolib.answer_json(200, {"version": version(h, where)}),
        "/v3/": lambda h: csolib.answer_json(200, {"version": version(h, where)}),
    }
    csolib.on_sigterm_exit()
    try:
        web = csolib.http_server((args.bind, args.port), routes)
    except csolib.Failed as exc:
        return csolib.fail(PROG, exc)
    csolib.log(f"keystone stand-in release {csolib.release()} listening on {where}: {summary}")
    threading.Thread(target=check_database, args=db, daemon=True).start()
    csolib.serve(web)
    return 0


if __name__ == "__main__":
    sys.exit(main())
