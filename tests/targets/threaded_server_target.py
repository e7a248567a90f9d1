"""Integration-test target: the standard library's threaded HTTP server, one thread per
request, with a leaking route. What thread-per-request servers do to a reader from outside:
thread states are created and freed with every request, and the heap churns.

Usage:
    python threaded_server_target.py TRUTH_PATH

Serves on 127.0.0.1 (a port the system picks):
  GET /leak  keeps a LeakedSession (with its attributes and a payload list) in a global
             list, as a per-request cache that is never evicted would;
  GET /ok    allocates a response and frees it.
Writes the truth {"pid", "port", "leaking_type"}, prints READY and blocks in os.read(0, 1);
the server runs in a daemon thread. Python 3.6 compatible (3.6 has no ThreadingHTTPServer:
the same class is made from its parts).
"""

import os
import sys
import json
import threading
import socketserver
from http.server import BaseHTTPRequestHandler, HTTPServer


class ThreadingHTTPServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


class LeakedSession(object):
    def __init__(self, path, n):
        self.path = path
        self.number = n
        self.payload = [n] * 8


SESSIONS = []
counter = [0]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        counter[0] += 1
        if self.path == "/leak":
            SESSIONS.append(LeakedSession(self.path, counter[0]))
        body = ("%d\n" % counter[0]).encode() * 4
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="server")
    thread.daemon = True
    thread.start()
    truth = {"pid": os.getpid(), "port": server.server_address[1], "leaking_type": "__main__.LeakedSession"}
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(truth))
    os.rename(tmp, sys.argv[1])
    os.write(1, b"READY\n")
    os.read(0, 1)
    os._exit(0)


if __name__ == "__main__":
    main()
