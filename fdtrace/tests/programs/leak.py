# Leaks N files in a method, N connections in a function and N pipes in another thread, and
# handles others correctly
# (read_config closes its file; the server thread closes what it accepts). Waits for a line
# on stdin before it starts (fdtrace attaches to it by pid first), prints "done" after.
import os
import socket
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
kept = []


class Journal:
    def open(self, path):
        return open(path, "rb")  # LEAK: file


def read_config(path):
    with open(path, "rb") as f:  # CLOSED
        return f.read(16)


def dial(port):
    return socket.create_connection(("127.0.0.1", port))  # LEAK: socket


def make_pipe():
    return os.pipe()  # LEAK: pipe


def worker(n):
    for _ in range(n):
        kept.append(make_pipe())


def serve(server):
    while True:
        conn, _ = server.accept()
        conn.close()


def main():
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=serve, args=(server,), daemon=True).start()
    port = server.getsockname()[1]
    journal = Journal()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(N):
        kept.append(journal.open(os.devnull))
        read_config(__file__)
        kept.append(dial(port))
    t = threading.Thread(target=worker, args=(N,))
    t.start()
    t.join()
    print("done", flush=True)
    sys.stdin.readline()


main()
