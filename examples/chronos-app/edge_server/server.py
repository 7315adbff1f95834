"""The edge server stand-in: answers /health and names the dashboard it reports to."""

import http.server
import os


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (b"ok\n" if self.path == "/health"
                else f"edge -> {os.environ.get('EDGE_API_URL', '?')}\n".encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    address = (os.environ.get("EDGE_BIND", "0.0.0.0"), int(os.environ.get("EDGE_PORT", "9000")))
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    http.server.ThreadingHTTPServer(address, Handler).serve_forever()
