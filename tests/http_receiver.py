"""Test support: a real HTTP server on a free local port that records the POSTs it gets, for the
export's webhook (``export.notify_url``). It can answer the first few with an error status."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    url: str
    bodies: list = field(default_factory=list)      # each POST's JSON body, in order
    statuses: list = field(default_factory=list)    # the status each was answered with


@contextmanager
def receiver(fail_first: int = 0, fail_status: int = 503, status: int = 200):
    """Yield a ``Received`` whose ``url`` takes POSTs: the first ``fail_first`` get ``fail_status``."""
    got = Received("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):   # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = fail_status if len(got.bodies) < fail_first else status
            got.bodies.append(json.loads(body))
            got.statuses.append(answer)
            self.send_response(answer)
            self.end_headers()

        def log_message(self, *args):   # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_address[1]}/encore-exports"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
