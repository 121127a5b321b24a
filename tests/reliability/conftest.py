"""Fixtures of the reliability suite: a small good scene, a recording HTTP server. Its checks
(one line on stderr, the documented exit code, nothing left behind) are in tests/helpers.py."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def good_scene(tmp_path_factory) -> Path:
    from roadprn.synth import generate_scene

    folder = tmp_path_factory.mktemp("scene")
    return Path(generate_scene(folder / "good.tif", width=160, height=140, seed=3,
                               overviews=False).image_path)


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server standing for 'the network': every request it gets is recorded."""
    _Recorder.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}", _Recorder.hits
    httpd.shutdown()
