# One process connecting to many distinct peer addresses (127.0.0.0/8 is all
# local): for each, send 10 bytes, read 20, close. Its own source address is
# 127.0.0.1, so the server sees one peer. Prints its own counts.
import json, os, socket, sys

port, n = int(sys.argv[1]), int(sys.argv[2])
sent = received = 0
for i in range(n):
    addr = "127.%d.%d.%d" % (1 + i // 62500, (i // 250) % 250, 1 + i % 250)
    c = socket.socket()
    c.bind(("127.0.0.1", 0))
    c.connect((addr, port))
    c.sendall(b"0123456789")
    sent += 10
    got = 0
    while got < 20:
        b = c.recv(20 - got)
        if not b:
            break
        got += len(b)
    received += got
    c.close()
print(json.dumps({"pid": os.getpid(), "connections": n, "bytes_sent": sent, "bytes_received": received}))
