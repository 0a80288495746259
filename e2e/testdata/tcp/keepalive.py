# Keep-alive connections that predate the agent. Server and client are two
# processes (role in argv[1]); files in a shared directory drive the phases:
#   before "pause" exists: ping-pong on every connection (the agent starts
#     meanwhile);
#   "pause": stop, and write "paused";
#   "go": each connection moves 1,000 bytes up and 3,000 down, the client
#     closes, the server writes 24 more bytes (like a TLS close_notify) and
#     closes. Each prints what its own calls moved in the "go" phase.
import json, os, socket, sys, time

role, d = sys.argv[1], sys.argv[2]
N = 4

def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)

def readn(s, n):
    got = 0
    while got < n:
        b = s.recv(n - got)
        if not b:
            break
        got += len(b)
    return got

if role == "server":
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    with open(os.path.join(d, "port"), "w") as f:
        f.write(str(srv.getsockname()[1]))
    conns = [srv.accept()[0] for _ in range(N)]
    # ping-pong: answer each 4-byte ping until the client says "stop"
    for c in conns:
        c.setblocking(True)
    live = list(conns)
    while live:
        for c in list(live):
            b = c.recv(4)
            if b == b"stop":
                live.remove(c)
            else:
                c.sendall(b"pong")
    sent = received = 0
    for c in conns:
        received += readn(c, 1000)
        sent += c.send(b"b" * 3000)
        while True:
            b = c.recv(4096)
            if not b:
                break
            received += len(b)
        time.sleep(0.005)
        try:
            sent += c.send(b"x" * 24)
        except OSError:
            pass
        time.sleep(0.005)
        c.close()
    print(json.dumps({"pid": os.getpid(), "bytes_sent": sent, "bytes_received": received}))
else:
    port = int(open(os.path.join(d, "port")).read())
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(N)]
    with open(os.path.join(d, "connected"), "w"):
        pass
    while not os.path.exists(os.path.join(d, "pause")):
        for c in conns:
            c.sendall(b"ping")
            readn(c, 4)
        time.sleep(0.001)
    for c in conns:
        c.sendall(b"stop")
    with open(os.path.join(d, "paused"), "w"):
        pass
    wait("go")
    sent = received = 0
    for c in conns:
        c.sendall(b"a" * 1000)
        sent += 1000
        received += readn(c, 3000)
        c.close()
    print(json.dumps({"pid": os.getpid(), "bytes_sent": sent, "bytes_received": received}))
