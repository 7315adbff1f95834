"""A tiny HTTP service: `/` shows the configured background colour, `/health` answers ok."""

import html
import http.server
import os
import sys


def settings(path):
    values = {}
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.rstrip("\n").split("=", 1)
                values[key.strip()] = value.strip().strip('"')
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
