"""A TLS 1.3 client that sends its request in the same segment as its
Finished: Python's ssl on memory BIOs, so the handshake's last flight and the
first application record leave in one send(). A server that reads ahead
(nginx) then has the request in OpenSSL's buffer when its handshake returns,
and its first SSL_read serves it without a system call.

Arguments: host port path n. Each of n connections sends one
"GET path HTTP/1.1" with Connection: close and reads the response to its end.
Prints {"pid": ..., "counts": {"GET 200": n, ...}} as JSON."""
import json
import os
import socket
import ssl
import sys

host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context()  # the CA from SSL_CERT_FILE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
counts = {}
for _ in range(n):
    sock = socket.create_connection((host, port), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                sock.sendall(out.read())
            data = sock.recv(65536)
            if not data:
                sys.exit("server closed during the handshake")
            inc.write(data)
    # out holds the client's Finished: the request joins it.
    tls.write(("GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path).encode())
    sock.sendall(out.read())
    resp = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            resp += chunk
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            if not data:
                break
            inc.write(data)
        except ssl.SSLZeroReturnError:
            break
    if out.pending:
        sock.sendall(out.read())
    sock.close()
    status = int(resp.split(b" ", 2)[1])
    key = "GET %d" % status
    counts[key] = counts.get(key, 0) + 1
print(json.dumps({"pid": os.getpid(), "counts": counts}))
