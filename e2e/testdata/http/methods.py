"""HTTP/1.1 keep-alive server for the HTTP e2e tests: answers any method
(PROPFIND, MKCOL, QUERY, PURGE, a lower-case get, ...) with 200 and a small
body, and prints one JSON line on SIGTERM: requests per "METHOD path".
Listens on 127.0.0.1:<argv[1]>."""
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        key = "%s %s" % (self.command, self.path)
        counts[key] = counts.get(key, 0) + 1
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def stop(*_):
    print(json.dumps(counts), flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
