"""The building blocks the metrics' queries share: durations in SQL, percentiles, time buckets.

Kept apart from ``selectors`` so that ``hours`` (the sealed hours) and ``selectors`` can both use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Aggregate, FloatField, Func, Q

HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SecondsBetween(Func):
    """``later - earlier`` in seconds, as a float. PostgreSQL by default; SQLite below."""

    arity = 2
    output_field = FloatField()
    # date_part, not EXTRACT: since PostgreSQL 14 EXTRACT returns numeric, and that arithmetic, once per row in a
    # FILTER or ORDER BY, made the 30-day overview twice as slow; date_part still returns double precision.
    template = "date_part('epoch', %(expressions)s)"
    arg_joiner = " - "

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # julianday() is a float of days (~40 µs resolution today): rounded to the millisecond so that an instant
        # exactly on a bucket boundary lands in the right bucket.
        return self.as_sql(
            compiler,
            connection,
            template="ROUND((julianday(%(expressions)s)) * 86400.0, 3)",
            arg_joiner=") - julianday(",
        )


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`` (linear interpolation)."""

    function = "percentile_cont"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float, filter: Q | None = None) -> None:
        # The fraction is written into the SQL: a float we pass, never user input.
        super().__init__(expression, filter=filter, fraction=repr(float(fraction)))


def percentile_of_sorted(ordered: Sequence[float], fraction: float) -> float | None:
    """``percentile_cont`` of values already sorted: the same arithmetic as PostgreSQL's (orderedsetaggs.c: the
    rows at floor and ceil of ``fraction * (n - 1)``, then ``low + (high - low) * proportion``)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """What ``percentile_cont`` computes: linear interpolation between the closest ranks."""
    return percentile_of_sorted(sorted(values), fraction)


def floor_to(at: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long bucket (aligned to the Unix epoch) that contains ``at``."""
    elapsed = (at - EPOCH) // timedelta(microseconds=1)
    step = seconds * 1_000_000
    return EPOCH + timedelta(microseconds=elapsed - elapsed % step)


def hour_of(at: datetime) -> datetime:
    """The snapshot bucket (UTC hour) that contains ``at``."""
    return floor_to(at, 3600)
