"""A loopback HTTP server playing a team's app behind the API channel: scripted answers, every request recorded.

``responses`` is a queue of (status, headers, body) answered in order; when empty, 200 {"id": "cb-<n>"}.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0


class CallbackServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Script] = deque()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with outer._lock:
                    outer.requests.append(Recorded(self.path, dict(self.headers.items()), body))
                    step = outer.script.popleft() if outer.script else Script()
                    n = len(outer.requests)
                if step.delay:
                    time.sleep(step.delay)
                payload = step.body if step.body is not None else json.dumps({"id": f"cb-{n}"}).encode()
                try:
                    self.send_response(step.status)
                    for key, value in step.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/callback"

    def then(
        self,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
        body: bytes | None = None,
    ) -> CallbackServer:
        self.script.append(Script(status, headers or {}, body, delay))
        return self

    def __enter__(self) -> CallbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
