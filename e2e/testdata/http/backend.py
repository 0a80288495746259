"""Backend for the HTTP e2e test: answers nginx's proxied /api/ requests.

/api/items/<id> -> 200 with Content-Length, /api/fail -> 500,
/api/stream -> 200 delimited by the connection's close (HTTP/1.0),
anything else -> 404. Listens on 127.0.0.1:<argv[1]>.
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/items/"):
            body = b'{"item": "%s"}\n' % path.rsplit("/", 1)[1].encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/api/fail":
            body = b"backend failure\n"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/api/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(3):
                self.wfile.write(b"x" * 100)
                self.wfile.flush()
        else:
            self.send_error(404)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
