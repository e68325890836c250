"""``manage.py detect_language``: run the routing language detector on lines from stdin."""

from __future__ import annotations

import sys
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inbox.routing.langid import Detection, Hints, detect, parse_language_tags, warm_up

FALLBACK_LABEL = "und (fallback)"


def format_detection(detection: Detection) -> str:
    """One output line: ``language<TAB>confidence``, or ``und (fallback)<TAB>0.000`` for the fallback."""
    language = detection.language if detection.language is not None else FALLBACK_LABEL
    return f"{language}\t{detection.confidence:.3f}"


class Command(BaseCommand):
    help = (
        "Detect the language of each line read from stdin, as message routing does.\n\n"
        "Prints one line per input line: LANGUAGE<TAB>CONFIDENCE (3 decimals), e.g. 'es\\t0.987'.\n"
        f"A message that would go to the fallback queue prints '{FALLBACK_LABEL}\\t0.000' ('und' is the\n"
        "BCP 47 tag for 'undetermined'). Empty lines are fallback lines, so output line N answers input line N.\n"
        "Without --languages the active queues' languages are used (reads the database).\n"
        "With --verbosity 2 a third column says why: text, text+hint, hint, conversation or fallback."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--languages",
            help="comma-separated ISO 639-1 codes to choose among (default: the active queues' languages)",
        )
        parser.add_argument(
            "--hint",
            action="append",
            default=[],
            metavar="TAG",
            help="a declared language tag or header, e.g. 'pt-br' or 'es-ES,es;q=0.9,en;q=0.8' (repeatable)",
        )
        parser.add_argument("--conversation", metavar="CODE", help="the conversation's current language")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["languages"]:
            languages = frozenset(parse_language_tags(options["languages"]))
        else:
            from inbox.routing.selectors import configured_languages

            languages = configured_languages()
        if not languages:
            raise CommandError("no languages: pass --languages en,es,... or create an active queue")
        hints = Hints(declared=tuple(options["hint"]), conversation=options["conversation"] or None)
        verbose = options["verbosity"] >= 2
        warm_up(languages)
        for line in sys.stdin:
            detection = detect(line.rstrip("\r\n"), hints, languages=languages)
            out = format_detection(detection)
            self.stdout.write(f"{out}\t{detection.source}" if verbose else out)
