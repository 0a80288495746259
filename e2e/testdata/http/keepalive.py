"""Keep-alive client for the HTTP e2e test of connections opened before the
agent: opens C connections to 127.0.0.1:<argv[1]> and makes one request on
each, then waits until the file argv[2] exists, then makes N more requests
round-robin over the same connections and prints one JSON line with the
requests made after the wait. argv: PORT GOFILE C N."""
import http.client
import json
import os
import sys
import time

port, gofile, c, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(c)]


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


for conn in conns:
    get(conn, "/hello")
print("connected", flush=True)
while not os.path.exists(gofile):
    time.sleep(0.05)
ok = 0
for i in range(n):
    if get(conns[i % c], "/users/%d" % i) == 200:
        ok += 1
print(json.dumps({"after": ok}), flush=True)
