# Makes a TLS connection to itself over loopback once a line arrives on
# stdin, through Python's ssl module (libssl): the client sends N messages,
# the server receives until the end. Prints how many send and recv calls it
# made (the ground truth of the uprobe tests) and waits for stdin to close.
import socket, ssl, sys, threading

cert, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
cctx.check_hostname = False
cctx.verify_mode = ssl.CERT_NONE
ln = socket.socket()
ln.bind(("127.0.0.1", 0))
ln.listen()
print("ready", flush=True)
sys.stdin.readline()
reads = []

def serve():
    c, _ = ln.accept()
    s = sctx.wrap_socket(c, server_side=True)
    calls = 0
    while True:
        calls += 1
        try:
            if not s.recv(1024):
                break
        except (ssl.SSLError, OSError):
            break
    s.close()
    reads.append(calls)

t = threading.Thread(target=serve)
t.start()
c = cctx.wrap_socket(socket.create_connection(ln.getsockname()))
for _ in range(n):
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
c.close()
t.join()
print("reads=%d writes=%d" % (reads[0], n), flush=True)
sys.stdin.read()
