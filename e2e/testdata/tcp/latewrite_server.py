# A server that writes after its client has closed, like a TLS server's
# close_notify: answer, wait for the client's EOF, write 24 bytes (the peer
# answers with a reset), close. Prints the bytes its own calls moved.
import json, os, signal, socket, sys, time

n = int(sys.argv[1])
ready = sys.argv[2]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
with open(ready + ".tmp", "w") as f:
    f.write("127.0.0.1:%d" % srv.getsockname()[1])
os.rename(ready + ".tmp", ready)
sent = received = late_failed = 0
for _ in range(n):
    s, _ = srv.accept()
    received += len(s.recv(5))
    sent += s.send(b"ok")
    while True:
        b = s.recv(4096)
        if not b:
            break  # the client closed
        received += len(b)
    time.sleep(0.005)
    try:
        sent += s.send(b"x" * 24)
    except OSError:
        late_failed += 1
    time.sleep(0.005)
    s.close()
print(json.dumps({"pid": os.getpid(), "connections": n, "bytes_sent": sent,
                  "bytes_received": received, "late_failed": late_failed}))
