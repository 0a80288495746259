"""Python urllib client for the HTTP e2e test: fetches each URL given as an
argument (a "POST " prefix sends a small body) and prints
{"pid": ..., "counts": {"GET 200": n, ...}} as JSON."""
import json
import os
import sys
import urllib.error
import urllib.request

counts = {}
for arg in sys.argv[1:]:
    method, data = "GET", None
    if arg.startswith("POST "):
        method, arg, data = "POST", arg[5:], b"k=v" * 10
    req = urllib.request.Request(arg, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    key = "%s %d" % (method, status)
    counts[key] = counts.get(key, 0) + 1
print(json.dumps({"pid": os.getpid(), "counts": counts}))
