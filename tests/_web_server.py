"""Run the dashboard in a background thread of the test process (real uvicorn, real HTTP)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Running:
    base: str
    token: str

    def url(self, path: str, /, token: str | None = "", **params) -> str:
        """``base + path`` with the query; ``token=""`` adds the right token, None none, else that one."""
        query = dict(params)
        if token is not None:
            query["token"] = token or self.token
        return f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def get(self, path: str, /, token: str | None = "", **params) -> tuple[int, bytes, str]:
        """(status, body, content type) of a GET."""
        try:
            with urllib.request.urlopen(self.url(path, token, **params), timeout=30) as response:
                return response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("content-type", "")

    def json(self, path: str, /, **params):
        status, body, _ = self.get(path, **params)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def post(self, path: str, headers: dict | None = None, token_in_query: bool = False) -> tuple[int, dict]:
        url = self.url(path, "" if token_in_query else None)
        request = urllib.request.Request(url, data=b"", method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except ValueError:
                return err.code, {"text": body.decode()}


@contextlib.contextmanager
def running_dashboard(project: Path, token: str = "test-token-123", poll_s: float = 0.2) -> Iterator[Running]:
    """Serve ``project`` on a free loopback port for the duration of the ``with`` block."""
    from vitrify.web.server import bind_socket, create_app, make_server

    sock = bind_socket("127.0.0.1", 0)
    server = make_server(create_app(project, token, poll_s=poll_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the dashboard did not start"
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}", token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
