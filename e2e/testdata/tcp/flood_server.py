# Listens on 0.0.0.0 (every 127.x address); for each connection reads 10
# bytes, answers 20, reads until EOF. Stops after n connections.
import json, os, socket, sys

n, ready = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.bind(("0.0.0.0", 0))
srv.listen(512)
with open(ready + ".tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
os.rename(ready + ".tmp", ready)
sent = received = 0
for _ in range(n):
    s, _ = srv.accept()
    got = 0
    while got < 10:
        b = s.recv(10 - got)
        if not b:
            break
        got += len(b)
    received += got
    s.sendall(b"x" * 20)
    sent += 20
    while True:
        b = s.recv(4096)
        if not b:
            break
        received += len(b)
    s.close()
print(json.dumps({"pid": os.getpid(), "connections": n, "bytes_sent": sent, "bytes_received": received}))
