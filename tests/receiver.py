"""A webhook receiver for the tests, run as a process of its own (so a test can kill it): ``python
tests/receiver.py PORT LOG [hang]``. Every request is appended to LOG as one JSON line (path, headers, body) and
flushed to disk before anything is answered; then it answers 200, or with ``hang`` never answers (a receiver that
takes the request and stalls)."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    log_path = ""
    hang = False
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        line = json.dumps({"path": self.path, "headers": dict(self.headers.items()), "body": body.decode()})
        with self.lock, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())
        if self.hang:
            threading.Event().wait()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


def main() -> None:
    port, log_path = int(sys.argv[1]), sys.argv[2]
    Handler.log_path = log_path
    Handler.hang = len(sys.argv) > 3 and sys.argv[3] == "hang"
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
