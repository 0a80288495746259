# Connects n times: sends 5 bytes, reads the 2-byte answer, closes.
import json, os, socket, sys, time

host, port = sys.argv[2].rsplit(":", 1)
n = int(sys.argv[1])
sent = received = 0
for _ in range(n):
    c = socket.create_connection((host, int(port)))
    c.sendall(b"hello")
    sent += 5
    received += len(c.recv(2))
    c.close()
    time.sleep(0.03)
print(json.dumps({"pid": os.getpid(), "connections": n, "bytes_sent": sent, "bytes_received": received}))
