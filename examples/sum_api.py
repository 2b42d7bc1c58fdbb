#!/usr/bin/env python3
"""The web API of the seed's rpc example: ``/sum`` answers a + b.

POST or PUT a JSON object ``{"a": 132, "b": 75}``, or GET or DELETE with
``?a=132&b=75``; the answer is the sum as text (``207``). ``make run`` serves it
on 127.0.0.1:1323 beside kingtask, so that the seed's rpc example works as written.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class SumHandler(BaseHTTPRequestHandler):
    def answer(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            numbers = json.loads(self.rfile.read(length)) if length else dict(parse_qsl(url.query))
            status, text = (200, str(int(numbers["a"]) + int(numbers["b"])))
        except (ValueError, KeyError, TypeError):
            status, text = 400, 'expected a and b, e.g. {"a":132,"b":75}'
        if url.path != "/sum":
            status, text = 404, "only /sum is here"
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = answer


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 1323
    server = ThreadingHTTPServer(("127.0.0.1", port), SumHandler)
    print(f"example web API: http://127.0.0.1:{port}/sum", flush=True)
    server.serve_forever()
