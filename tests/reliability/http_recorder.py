"""A local HTTP server standing for "the network", in a process of its own.

Run as ``python http_recorder.py FOLDER``: prints ``HOST:PORT`` once listening, serves the files
in FOLDER (with byte ranges, as GDAL's /vsicurl/ asks), answers 404 otherwise, and records every
request. ``GET /__hits__`` answers the requests recorded so far as JSON (itself not recorded).
A request is recorded before it is answered, so once a client has its answer the request is in
the list: tests need no sleeps. In a separate process because GDAL may hold the GIL while it
waits for an answer, which a server thread in the test process could then never give.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

HITS: list[str] = []
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    folder = Path(".")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path == "/__hits__":
            with LOCK:
                data = json.dumps(HITS).encode()
            self._send(200, data, body)
            return
        with LOCK:
            HITS.append(f"{self.command} {self.path}")
        name = self.path.split("?")[0].lstrip("/")
        target = self.folder / name
        if not name or "/" in name or not target.is_file():
            self._send(404, b"", body)
            return
        data = target.read_bytes()
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start = int(first)
            end = min(int(last) if last else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self._finish(data[start:end + 1], body)
            return
        self._send(200, data, body)

    def _send(self, code: int, data: bytes, body: bool) -> None:
        self.send_response(code)
        self._finish(data, body)

    def _finish(self, data: bytes, body: bool) -> None:
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    Handler.folder = Path(sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
