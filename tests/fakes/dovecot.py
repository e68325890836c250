"""A private Dovecot IMAP server for tests: its own config, ports, state, logs and maildirs in a temp dir.

It never touches a system Dovecot: ``base_dir``, ``state_dir`` and the log paths point into the temp dir, and it
is started and stopped with ``dovecot -c FILE`` / ``dovecot -c FILE stop``. As root, Dovecot refuses to run its
login processes as root, so they run as ``dovenull`` and the mail processes as ``dovecot`` (which owns the
maildirs).

    with Dovecot(users={"support@example.test": "secret"}) as server:
        uid = server.deliver("support@example.test", raw_bytes)
        Mailbox("127.0.0.1", server.port, "support@example.test", "secret", ssl=False)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from imapclient import IMAPClient

DEFAULT_USERS = {"support@example.test": "secret-password"}


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_dovecot() -> str | None:
    """The path of the dovecot binary; installs Debian's dovecot-imapd when missing and we are root.

    Returns None (with nothing installed) when that is not possible; the caller skips with the reason.
    """
    found = shutil.which("dovecot") or (Path("/usr/sbin/dovecot").exists() and "/usr/sbin/dovecot") or None
    if found:
        return str(found)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # As in .ci/services.sh: policy-rc.d answering 101 keeps the package from starting a system Dovecot.
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "dovecot-imapd"], env=env, check=False, capture_output=True, timeout=600
        )
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
    found = shutil.which("dovecot") or (Path("/usr/sbin/dovecot").exists() and "/usr/sbin/dovecot") or None
    return str(found) if found else None


class Dovecot:
    """Start with ``start()`` (or ``with``), stop with ``stop()``. ``port`` is the IMAP port on 127.0.0.1."""

    def __init__(self, users: dict[str, str] | None = None, *, binary: str | None = None) -> None:
        self.users = dict(users or DEFAULT_USERS)
        found = binary or ensure_dovecot()
        if not found:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
        self.binary: str = found
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self.config: Path | None = None
        self._running = False

    # --- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sb-dovecot-"))
        # The mail and login processes run as dovecot/dovenull: they must be able to reach the temp dir.
        os.chmod(self.root, 0o755)  # noqa: S103 - a test server's temp dir, holding only test mail
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir()
        self.port = free_port()
        owner = self._mail_owner()
        os.chown(self.root / "mail", *owner)
        for user in self.users:
            self._make_maildir(user)
        self._write_passwd()
        self.config = self.root / "dovecot.conf"
        self.config.write_text(self._config_text())
        # The master daemonizes; its children keep inherited pipes open, so write to a file, not a pipe.
        with open(self.root / "start.log", "wb") as out:
            result = subprocess.run(
                [self.binary, "-c", str(self.config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30
            )
        if result.returncode != 0:
            text = (self.root / "start.log").read_text(errors="replace")
            raise RuntimeError(f"dovecot did not start ({result.returncode}): {text}{self.log()}")
        self._running = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port} within {timeout}s\n{self.log()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self._running and self.config is not None and self.root is not None:
            subprocess.run(
                [self.binary, "-c", str(self.config), "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            pid_file = self.root / "run" / "master.pid"
            deadline = time.monotonic() + timeout
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_file.exists():  # did not stop in time: end our own master by its pid, nothing else
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            self._running = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log(self) -> str:
        if self.root is None:
            return ""
        parts = []
        for name in ("dovecot.log", "dovecot.info.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    # --- mail ----------------------------------------------------------------------------------------------
    def add_user(self, user: str, password: str) -> None:
        """A new account with an empty INBOX, usable at once."""
        assert self.root is not None
        self.users[user] = password
        self._make_maildir(user)
        self._write_passwd()

    def _write_passwd(self) -> None:
        # One passwd-file per user (the passdb path contains %u): a new account is a new file, which Dovecot
        # reads on first use. Rewriting one shared file is not picked up reliably within the same second.
        assert self.root is not None
        directory = self.root / "passwd.d"
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)  # noqa: S103 - dovecot's auth process reads it; test data only
        for user, password in self.users.items():
            path = directory / user
            if not path.exists():
                path.write_text(f"{user}:{{PLAIN}}{password}::::::\n")
                os.chmod(path, 0o644)

    def password(self, user: str) -> str:
        return self.users[user]

    @contextmanager
    def client(self, user: str, *, folder: str | None = "INBOX") -> Iterator[IMAPClient]:
        """A logged-in imapclient session as ``user`` (``folder`` selected unless None)."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        try:
            client.login(user, self.users[user])
            if folder:
                client.select_folder(folder)
            yield client
        finally:
            try:
                client.logout()
            except Exception:
                client.shutdown()

    def deliver(self, user: str, raw: bytes, *, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        """APPEND ``raw`` to the user's folder (as an MTA's delivery would land it); returns its UID."""
        with self.client(user, folder=None) as client:
            response = client.append(folder, raw, flags=flags)
        match = re.search(rb"APPENDUID \d+ (\d+)", response if isinstance(response, bytes) else b"")
        if not match:
            raise RuntimeError(f"APPEND gave no UID: {response!r}")
        return int(match.group(1))

    def deliver_to_maildir(self, user: str, raw: bytes) -> Path:
        """Write ``raw`` into the maildir's new/ directly, as a local delivery agent would (no IMAP involved)."""
        assert self.root is not None
        base = self.root / "mail" / user / "Maildir"
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.sbtest"
        tmp = base / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, *self._mail_owner())
        target = base / "new" / name
        tmp.rename(target)  # maildir delivery: write in tmp/, then rename into new/ (atomic)
        return target

    def create_folder(self, user: str, folder: str) -> None:
        with self.client(user, folder=None) as client:
            client.create_folder(folder)

    def flags(self, user: str, uid: int, *, folder: str = "INBOX") -> tuple[bytes, ...]:
        with self.client(user, folder=None) as client:
            client.select_folder(folder, readonly=True)
            data = client.get_flags([uid])
        return tuple(data.get(uid, ()))

    # --- internals -----------------------------------------------------------------------------------------
    @staticmethod
    def _mail_owner() -> tuple[int, int]:
        if os.geteuid() != 0:
            return os.getuid(), os.getgid()
        entry = pwd.getpwnam("dovecot")
        return entry.pw_uid, entry.pw_gid

    def _make_maildir(self, user: str) -> None:
        assert self.root is not None
        home = self.root / "mail" / user
        for sub in ("", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"):
            path = home / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, *self._mail_owner())

    def _config_text(self) -> str:
        assert self.root is not None
        root = self.root
        if os.geteuid() == 0:
            identity = (
                "default_login_user = dovenull\n"
                "default_internal_user = dovecot\n"
                "userdb {\n  driver = static\n"
                f"  args = uid=dovecot gid=dovecot home={root}/mail/%u\n}}\n"
            )
        else:  # an unprivileged run: everything as the current user
            me = pwd.getpwuid(os.getuid()).pw_name
            identity = (
                f"default_login_user = {me}\n"
                f"default_internal_user = {me}\n"
                "userdb {\n  driver = static\n"
                f"  args = uid={os.getuid()} gid={os.getgid()} home={root}/mail/%u\n}}\n"
            )
        return f"""# Generated for one test run: a private instance, nothing shared with a system Dovecot.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.info.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
# IDLE learns about new mail through inotify; poll every second too, for file systems without it.
mailbox_idle_check_interval = 1 secs
{identity}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd.d/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
