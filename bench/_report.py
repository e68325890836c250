"""Shared reporting for the scripts in bench/: machine facts, median and spread, and the measured part of
docs/benchmarks.md.

Each script keeps its measured tables between two markers of its own in docs/benchmarks.md:

    <!-- bench:ingest -->
    ... written by `bench/ingest.py --write-docs` ...
    <!-- /bench:ingest -->

`write_section()` replaces only what lies between a script's markers, so the hand-written analysis around them (why
the numbers are what they are, what is next) stays; a script whose markers are missing appends a new section at the
end. `make bench` passes --write-docs to every script.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    """'2 CPUs (AMD EPYC 7B13), 23.5 GiB RAM, Linux 6.1, Python 3.11.7'."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    kernel = platform.release().split("-")[0]
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**20:.1f} GiB RAM, Linux {kernel}, Python {platform.python_version()}"
    )


def load() -> str:
    """The 1 / 5 / 15 minute load averages, e.g. '0.12 0.30 0.25'."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(values: Iterable[float], fmt: str = "{:,.1f}") -> str:
    """'median (min-max)' of repeated runs; just the value for one run."""
    vals = list(values)
    if not vals:
        return "-"
    med = fmt.format(statistics.median(vals))
    if len(vals) == 1:
        return med
    return f"{med} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def header(command: str, extra: Sequence[str] = ()) -> str:
    """The lines every measured section starts with: command, machine, date, load."""
    lines = [
        f"* **Command:** `{command}`",
        f"* **Machine:** {machine()}.",
        f"* **Date:** {now()}; load average after the run {load()} (1 / 5 / 15 min).",
    ]
    lines += [f"* {line}" for line in extra]
    return "\n".join(lines)


def write_section(key: str, markdown: str, title: str | None = None, path: Path | None = None) -> None:
    """Put `markdown` between `<!-- bench:key -->` and `<!-- /bench:key -->` in docs/benchmarks.md (or the file
    named by SWITCHBOARD_BENCH_DOCS, to try a script without touching the real one).

    Without those markers the section is appended at the end under `## title` (the key when no title is given).
    Benchmarks running at the same time each write their own section: the file is locked while it is rewritten.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", key):
        raise ValueError(f"bad section key {key!r}: use a-z, 0-9, '-' and '_'")
    path = path or Path(os.environ.get("SWITCHBOARD_BENCH_DOCS") or DOCS)
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    body = f"{begin}\n{markdown.strip()}\n{end}"
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        start = text.find(begin)
        if start >= 0:
            stop = text.find(end, start)
            if stop < 0:
                raise ValueError(f"{path}: {begin} has no {end}")
            text = text[:start] + body + text[stop + len(end) :]
        else:
            text = text.rstrip("\n") + f"\n\n## {title or key}\n\n{body}\n"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(f"[bench] wrote the '{key}' section of {path}", flush=True)
