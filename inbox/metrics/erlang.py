"""Erlang C staffing arithmetic: how many agents a queue needs to meet its service-level target.

Model (M/M/N, "Erlang C"): customers arrive at random (Poisson) at rate λ, each takes an exponentially
distributed handling time with mean AHT, N agents serve one first-come-first-served queue, nobody abandons.

    traffic (offered load, in Erlangs)   A = λ · AHT            (arrivals per hour · AHT seconds / 3600)
    Erlang B (all N busy, loss system)   B(0) = 1,  B(n) = A·B(n-1) / (n + A·B(n-1))
    Erlang C (probability of waiting)    C(N, A) = N·B / (N - A·(1 - B))              for N > A
                                         (the same value as the textbook form
                                          (A^N/N! · N/(N-A)) / (Σ_{k<N} A^k/k! + A^N/N! · N/(N-A)))
    service level within t seconds       SL = 1 - C · exp(-(N - A) · t / AHT)
    average speed of answer              ASA = C · AHT / (N - A)

The recursion keeps every intermediate value in [0, 1], so no factorial or power of A is ever formed: it stays
exact to float precision for traffic in the thousands of Erlangs, where A^N / N! overflows a float long before.
When N <= A the queue grows without bound: every customer waits (C = 1), none is answered within any target
(SL = 0) and the mean wait is infinite.

Sources (the worked examples tests/metrics/test_erlang.py checks, each also against an exact rational evaluation
of the textbook formula):
- Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example"
  (https://www.callcentrehelper.com/erlang-c-formula-example-121281.htm): 100 calls per 30 minutes, AHT 180 s,
  80 % answered within 20 s -> A = 10 Erlangs, 14 agents. The figures for that example published by the CRAN
  package ErlangC 0.1.0 (its README, https://cran.r-project.org/package=ErlangC): with 11 agents P(wait) 0.6821182 and
  service level 0.3896138; with 14 agents P(wait) 0.1741319, service level 0.88835, ASA 7.835937 s. The same
  example in pyworkforce (rodrigo-arenas/pyworkforce, pyworkforce/queuing/tests/test_erlang.py): 14 agents, service
  level 0.888, occupancy 0.714, P(wait) 0.174; capped at 70 % occupancy, 15 agents, service level 0.941,
  P(wait) 0.102.
- The same evaluation of C through the Erlang B recursion: P. Prevos, "Call Centre Workforce Planning Using
  Erlang C in R" (The Lucid Manager, lucidmanager.org, 2018).
"""

from __future__ import annotations

import math

__all__ = [
    "agents_for_service_level",
    "average_speed_of_answer",
    "erlang_b",
    "erlang_c",
    "service_level",
    "traffic_erlangs",
]

# A computed service level this close below the target counts as meeting it (float noise, not a real shortfall).
_TOLERANCE = 1e-12


def _check_agents_traffic(agents: int, traffic: float) -> None:
    if agents < 0:
        raise ValueError(f"agents must be >= 0, got {agents}")
    if not math.isfinite(traffic) or traffic < 0:
        raise ValueError(f"traffic must be a finite number >= 0, got {traffic}")


def traffic_erlangs(*, arrivals_per_hour: float, handle_seconds: float) -> float:
    """Offered load A in Erlangs: arrivals per hour × mean handling time in hours."""
    return arrivals_per_hour * handle_seconds / 3600.0


def erlang_b(*, agents: int, traffic: float) -> float:
    """Erlang B: probability that all ``agents`` are busy in a loss system offered ``traffic`` Erlangs.

    Computed with the stable recursion B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)).
    """
    _check_agents_traffic(agents, traffic)
    b = 1.0
    for n in range(1, agents + 1):
        ab = traffic * b
        b = ab / (n + ab)
    return b


def _c_from_b(agents: int, traffic: float, b: float) -> float:
    # C = N·B / (N - A·(1 - B)); the caller guarantees N > A > 0, so the denominator N - A + A·B is positive.
    denominator = agents - traffic * (1.0 - b)
    if denominator <= 0.0:  # only reachable through rounding when N is a hair above A
        return 1.0
    return min(1.0, agents * b / denominator)


def erlang_c(*, agents: int, traffic: float) -> float:
    """Erlang C: probability that a customer has to wait, with ``agents`` agents and ``traffic`` Erlangs.

    C(N, A) = (A^N/N! · N/(N-A)) / (Σ_{k=0}^{N-1} A^k/k! + A^N/N! · N/(N-A)), evaluated as N·B / (N - A·(1 - B))
    with B the Erlang B value from its recursion (no factorials, no overflow for large A).

    0 when there is no traffic; 1 when ``agents <= traffic`` (the queue is unstable and everyone waits).
    Raises ValueError for negative agents or negative / non-finite traffic.
    """
    _check_agents_traffic(agents, traffic)
    if traffic == 0.0:
        return 0.0
    if agents <= traffic:
        return 1.0
    return _c_from_b(agents, traffic, erlang_b(agents=agents, traffic=traffic))


def _check_times(handle_seconds: float, target_seconds: float | None = None) -> None:
    if not math.isfinite(handle_seconds) or handle_seconds <= 0:
        raise ValueError(f"handle_seconds must be a finite number > 0, got {handle_seconds}")
    if target_seconds is not None and (not math.isfinite(target_seconds) or target_seconds < 0):
        raise ValueError(f"target_seconds must be a finite number >= 0, got {target_seconds}")


def _service_level(agents: int, traffic: float, c: float, handle_seconds: float, target_seconds: float) -> float:
    return 1.0 - c * math.exp(-(agents - traffic) * target_seconds / handle_seconds)


def service_level(*, agents: int, traffic: float, handle_seconds: float, target_seconds: float) -> float:
    """Share of customers answered within ``target_seconds``: SL = 1 - C · exp(-(N - A) · t / AHT).

    1 when there is no traffic (nobody waits); 0 when ``agents <= traffic`` (the queue grows without bound).
    Raises ValueError for invalid inputs (negative agents or traffic, handle time <= 0, negative target).
    """
    _check_agents_traffic(agents, traffic)
    _check_times(handle_seconds, target_seconds)
    if traffic == 0.0:
        return 1.0
    if agents <= traffic:
        return 0.0
    c = erlang_c(agents=agents, traffic=traffic)
    return _service_level(agents, traffic, c, handle_seconds, target_seconds)


def average_speed_of_answer(*, agents: int, traffic: float, handle_seconds: float) -> float:
    """Mean wait before an agent answers, in the unit of ``handle_seconds``: ASA = C · AHT / (N - A).

    0 when there is no traffic; ``math.inf`` when ``agents <= traffic``.
    Raises ValueError for invalid inputs (negative agents or traffic, handle time <= 0).
    """
    _check_agents_traffic(agents, traffic)
    _check_times(handle_seconds)
    if traffic == 0.0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return erlang_c(agents=agents, traffic=traffic) * handle_seconds / (agents - traffic)


def _finite(*values: float) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def agents_for_service_level(
    *,
    arrivals_per_hour: float,
    handle_seconds: float,
    target_seconds: float,
    service_level: float = 0.8,
    max_occupancy: float | None = None,
    max_agents: int = 10_000,
) -> int | None:
    """Smallest number of agents N that answers ``service_level`` of customers within ``target_seconds``.

    Traffic A = ``arrivals_per_hour`` · ``handle_seconds`` / 3600 Erlangs; N must exceed A (a stable queue) and
    satisfy 1 - C(N, A) · exp(-(N - A) · target / AHT) >= ``service_level``. With ``max_occupancy`` (a share in
    (0, 1]) N must also keep occupancy A / N <= ``max_occupancy``.

    Returns 0 when nothing arrives; None when an input is invalid (negative or non-finite numbers, a handle time
    of 0, a service level outside [0, 1], an occupancy cap outside (0, 1], a negative ``max_agents``) or when no
    N up to ``max_agents`` meets the target (a 100 % service level is never met while anyone arrives).

    Erlang B is carried from N to N + 1 by its recursion, so the search costs O(N) for any traffic.
    """
    if not _finite(arrivals_per_hour, handle_seconds, target_seconds, service_level):
        return None
    if arrivals_per_hour < 0 or handle_seconds <= 0 or target_seconds < 0 or not 0 <= service_level <= 1:
        return None
    if max_occupancy is not None and (not _finite(max_occupancy) or not 0 < max_occupancy <= 1):
        return None
    if max_agents < 0:
        return None
    if arrivals_per_hour == 0:
        return 0
    traffic = traffic_erlangs(arrivals_per_hour=arrivals_per_hour, handle_seconds=handle_seconds)
    if traffic == 0.0:  # arrivals so rare (or handling so short) that the load underflows
        return 0
    if service_level >= 1.0:  # C · exp(...) > 0 for every finite N: never exactly 100 %
        return None
    lowest = math.floor(traffic) + 1  # N > A
    if max_occupancy is not None:
        lowest = max(lowest, math.ceil(traffic / max_occupancy))
        while traffic / lowest > max_occupancy:  # ceil() of an inexact quotient can land one short
            lowest += 1
    if lowest > max_agents:
        return None
    b = 1.0
    for n in range(1, max_agents + 1):
        ab = traffic * b
        b = ab / (n + ab)
        if n < lowest:
            continue
        c = _c_from_b(n, traffic, b)
        if _service_level(n, traffic, c, handle_seconds, target_seconds) >= service_level - _TOLERANCE:
            return n
    return None
