"""WebSocket (RFC 6455) server and client for the HTTP e2e tests, with no
library: the server answers the upgrade with 101 and echoes text frames; the
client connects N times, upgrades, sends and reads M frames each, and
prints how many upgrades and echoes it completed.

  websocket.py server PORT
  websocket.py client PORT N M
"""
import base64
import hashlib
import json
import os
import socket
import socketserver
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_head(f):
    lines = []
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            return lines
        lines.append(line.decode().strip())


def send_frame(sock, payload, mask):
    hdr = bytes([0x81])
    n = len(payload)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        hdr += bytes([0x80 | n]) + key
    else:
        hdr += bytes([n])
    sock.sendall(hdr + payload)


def read_frame(f):
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    key = f.read(4) if b1 & 0x80 else None
    data = f.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        head = read_head(self.rfile)
        key = [h.split(":", 1)[1].strip() for h in head if h.lower().startswith("sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.wfile.flush()
        while True:
            op, data = read_frame(self.rfile)
            if op == 8:
                return
            send_frame(self.request, data, False)


def client(port, n, m):
    upgrades = echoes = 0
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        head = read_head(f)
        if head and " 101 " in head[0]:
            upgrades += 1
        for i in range(m):
            # frames that look like HTTP/1: after the upgrade they are not
            send_frame(s, b"GET /not-http HTTP/1.1\r\n\r\n", True)
            if read_frame(f)[1] == b"GET /not-http HTTP/1.1\r\n\r\n":
                echoes += 1
        s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
        s.close()
    print(json.dumps({"upgrades": upgrades, "echoes": echoes}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
