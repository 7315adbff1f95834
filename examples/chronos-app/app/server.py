"""A tiny HTTP service: `/` shows the configured background colour, `/health` answers ok."""

import html
import http.server
import os
import re
import sys

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r'\\(.)')


def settings(path):
    """KEY=value lines as systemd's EnvironmentFile= reads them, which is how deploy renders
    them: KEY="value" (backslash escapes \\" \\\\ \\$ and \\` stand for the character itself),
    KEY='value' (as is) or KEY=value; # and ; start comments. Values are never evaluated."""
    values = {}
    if not os.path.exists(path):
        return values
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f.read().split("\n"), 1):
            text = line.lstrip(" \t")
            if not text or text.startswith(("#", ";")):
                continue
            key, eq, value = text.partition("=")
            quoted = DOUBLE_QUOTED.fullmatch(value)
            if not eq or not KEY.fullmatch(key):
                raise ValueError(f"{path}:{number}: not KEY=value")
            if quoted:
                value = ESCAPE.sub(lambda m: m[1] if m[1] in '"\\$`' else m[0], quoted[1])
            elif len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]:
                value = value[1:-1]
            elif any(c in value for c in "\"'\\"):
                raise ValueError(f"{path}:{number}: {key}: a quote or backslash outside quotes")
            else:
                value = value.strip(" \t")
            values[key] = value
    return values


class Handler(http.server.BaseHTTPRequestHandler):
    config = {}

    def do_GET(self):
        if self.path == "/health":
            body, kind = b"ok\n", "text/plain"
        else:
            color = html.escape(self.config.get("BACKGROUND_COLOR", "white"))
            release = html.escape(os.environ.get("DEPLOY_RELEASE", "?"))
            body = (f"<!doctype html><title>chronos</title><body style='background:{color}'>"
                    f"<h1>chronos dashboard</h1><p>background_color: {color}</p>"
                    f"<p>release: {release}</p></body>\n").encode()
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), args[0] % args[1:]))


def main():
    Handler.config = settings("dashboard_frontend/.env.docker")
    deployment = settings(".env.deployment")
    address = (deployment.get("DASHBOARD_BIND", "0.0.0.0"), int(deployment.get("DASHBOARD_PORT", "8080")))
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(address, Handler)
    print(f"serving on {address[0]}:{address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
