"""Erlang C staffing figures (inbox.metrics.erlang) against published worked examples and an exact evaluation.

Published figures asserted here (each one also recomputed below by the exact textbook formula):
- Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example"
  (https://www.callcentrehelper.com/erlang-c-formula-example-121281.htm): 100 calls per 30 minutes, AHT 180 s,
  target 80 % answered within 20 s -> traffic 10 Erlangs, 14 agents needed.
  Figures for that example as printed in the README of the CRAN package ErlangC 0.1.0
  (https://cran.r-project.org/package=ErlangC): 11 agents -> P(wait) 0.6821182, service level 0.3896138;
  14 agents -> P(wait) 0.1741319, service level 0.88835, ASA 7.83593701177724 s, occupancy 0.7142857.
- pyworkforce (github.com/rodrigo-arenas/pyworkforce, pyworkforce/queuing/tests/test_erlang.py), same example:
  14 agents with service level 0.888, occupancy 0.714, P(wait) 0.174; with occupancy capped at 70 %:
  15 agents, service level 0.941, occupancy 0.667, P(wait) 0.102.
  (pyworkforce enters the target as 0.33 min = 19.8 s; its three-decimal figures are the same at 20 s.)
- mitan.co.uk "The Erlang-C formula" step-by-step example (360 calls per half hour, 240 s calls, 55 agents, 15 s
  target): only its inputs are used; its outputs are checked against the exact formula, not against the page.

The independent reference is the textbook formula itself,
    C(N, A) = (A^N/N! · N/(N-A)) / (Σ_{k=0}^{N-1} A^k/k! + A^N/N! · N/(N-A)),
evaluated exactly with fractions and integer factorials (small N) or with 60-digit decimals (large N), where the
module under test uses the Erlang B recursion instead.
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from inbox.metrics.erlang import (
    agents_for_service_level,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    service_level,
    traffic_erlangs,
)

# --- independent references: the literal formulas, no recursion -------------------------------------------------


def exact_erlang_b(n: int, a: Fraction) -> Fraction:
    terms = [a**k / math.factorial(k) for k in range(n + 1)]
    return terms[n] / sum(terms)


def exact_erlang_c(n: int, a: Fraction) -> Fraction:
    assert n > a > 0
    top = a**n / math.factorial(n) * Fraction(n) / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


def decimal_erlang_c(n: int, a: int) -> Decimal:
    """The same formula with 60 significant digits: A^N / N! is far beyond a float for A in the thousands."""
    with localcontext() as ctx:
        ctx.prec = 60
        da = Decimal(a)
        top = da**n / Decimal(math.factorial(n)) * Decimal(n) / (Decimal(n) - da)
        total = sum((da**k / Decimal(math.factorial(k)) for k in range(n)), Decimal(0))
        return top / (total + top)


def exact_service_level(n: int, a: Fraction, handle: float, target: float) -> float:
    return 1.0 - float(exact_erlang_c(n, a)) * math.exp(-(n - float(a)) * target / handle)


def brute_force_agents(arrivals_per_hour: int, handle: int, target: float, level: float, cap: float | None) -> int:
    a = Fraction(arrivals_per_hour * handle, 3600)
    n = math.floor(a) + 1
    while exact_service_level(n, a, handle, target) < level or (cap is not None and a / n > Fraction(str(cap))):
        n += 1
    return n


# --- published worked examples -------------------------------------------------------------------------------------

# Call Centre Helper: 100 calls per 30 minutes = 200 per hour, AHT 180 s, 80 % within 20 s.
CCH_ARRIVALS_PER_HOUR = 200
CCH_HANDLE = 180
CCH_TARGET = 20


def test_callcentrehelper_traffic_is_10_erlangs():
    assert traffic_erlangs(arrivals_per_hour=CCH_ARRIVALS_PER_HOUR, handle_seconds=CCH_HANDLE) == pytest.approx(10.0)


def test_callcentrehelper_14_agents_matches_published_figures():
    # CRAN ErlangC 0.1.0 README: wait_probability 0.1741319, service_level 0.88835,
    # average_speed_of_answer 7.83593701177724 s; pyworkforce: 0.174 / 0.888.
    c = erlang_c(agents=14, traffic=10.0)
    sl = service_level(agents=14, traffic=10.0, handle_seconds=CCH_HANDLE, target_seconds=CCH_TARGET)
    asa = average_speed_of_answer(agents=14, traffic=10.0, handle_seconds=CCH_HANDLE)
    assert c == pytest.approx(0.1741319, abs=5e-8)
    assert round(c, 3) == 0.174
    assert sl == pytest.approx(0.88835, abs=5e-6)
    assert round(sl, 3) == 0.888
    assert asa == pytest.approx(7.83593701177724, rel=1e-9)
    occupancy = 10.0 / 14
    assert occupancy == pytest.approx(0.7142857, abs=5e-8)  # the published occupancy, for completeness
    # ... and the exact formula agrees with those published figures.
    assert float(exact_erlang_c(14, Fraction(10))) == pytest.approx(0.1741319, abs=5e-8)
    assert exact_service_level(14, Fraction(10), CCH_HANDLE, CCH_TARGET) == pytest.approx(0.88835, abs=5e-6)


def test_callcentrehelper_11_agents_matches_published_figures():
    # CRAN ErlangC 0.1.0 README, first row of its search: wait_probability 0.6821182, service_level 0.3896138.
    assert erlang_c(agents=11, traffic=10.0) == pytest.approx(0.6821182, abs=5e-8)
    sl = service_level(agents=11, traffic=10.0, handle_seconds=CCH_HANDLE, target_seconds=CCH_TARGET)
    assert sl == pytest.approx(0.3896138, abs=5e-8)
    assert float(exact_erlang_c(11, Fraction(10))) == pytest.approx(0.6821182, abs=5e-8)


def test_callcentrehelper_needs_14_agents():
    needed = agents_for_service_level(
        arrivals_per_hour=CCH_ARRIVALS_PER_HOUR, handle_seconds=CCH_HANDLE, target_seconds=CCH_TARGET
    )
    assert needed == 14
    # 13 agents fall short of 80 %, by the exact formula too.
    assert exact_service_level(13, Fraction(10), CCH_HANDLE, CCH_TARGET) < 0.8
    assert exact_service_level(14, Fraction(10), CCH_HANDLE, CCH_TARGET) >= 0.8
    # The article's 85 % maximum occupancy does not bind (10 / 14 = 71 %).
    capped = agents_for_service_level(
        arrivals_per_hour=CCH_ARRIVALS_PER_HOUR,
        handle_seconds=CCH_HANDLE,
        target_seconds=CCH_TARGET,
        service_level=0.8,
        max_occupancy=0.85,
    )
    assert capped == 14


def test_pyworkforce_occupancy_cap_70_percent_needs_15_agents():
    # pyworkforce test_over_occupancy_erlangc: raw positions 15, service level 0.941, occupancy 0.667, P(wait) 0.102.
    needed = agents_for_service_level(
        arrivals_per_hour=CCH_ARRIVALS_PER_HOUR,
        handle_seconds=CCH_HANDLE,
        target_seconds=CCH_TARGET,
        service_level=0.8,
        max_occupancy=0.7,
    )
    assert needed == 15
    assert round(erlang_c(agents=15, traffic=10.0), 3) == 0.102
    assert round(service_level(agents=15, traffic=10.0, handle_seconds=CCH_HANDLE, target_seconds=CCH_TARGET), 3) == (
        0.941
    )
    assert round(10 / 15, 3) == 0.667


def test_mitan_example_against_exact_formula():
    # mitan.co.uk: 360 calls per half hour (0.2 calls/s), 240 s calls, 55 agents, 15 s target -> 48 Erlangs.
    traffic = traffic_erlangs(arrivals_per_hour=720, handle_seconds=240)
    assert traffic == pytest.approx(48.0)
    exact_c = float(exact_erlang_c(55, Fraction(48)))
    assert erlang_c(agents=55, traffic=48.0) == pytest.approx(exact_c, rel=1e-12)
    assert service_level(agents=55, traffic=48.0, handle_seconds=240, target_seconds=15) == pytest.approx(
        1 - exact_c * math.exp(-7 * 15 / 240), rel=1e-12
    )
    assert average_speed_of_answer(agents=55, traffic=48.0, handle_seconds=240) == pytest.approx(
        exact_c * 240 / 7, rel=1e-12
    )


# --- agreement with the exact formula ------------------------------------------------------------------------------

GRID = [
    (1, Fraction(1, 2)),
    (2, Fraction(1)),
    (3, Fraction(5, 2)),
    (5, Fraction(2)),
    (12, Fraction(10)),
    (13, Fraction(10)),
    (20, Fraction(37, 2)),
    (30, Fraction(15)),
    (55, Fraction(48)),
    (60, Fraction(3, 10)),
    (120, Fraction(110)),
]


@pytest.mark.parametrize(("agents", "traffic"), GRID)
def test_erlang_c_matches_exact_formula(agents, traffic):
    assert erlang_c(agents=agents, traffic=float(traffic)) == pytest.approx(
        float(exact_erlang_c(agents, traffic)), rel=1e-11
    )
    assert erlang_b(agents=agents, traffic=float(traffic)) == pytest.approx(
        float(exact_erlang_b(agents, traffic)), rel=1e-11
    )
    # Erlang C (wait) is always above Erlang B (loss) for a stable queue.
    assert erlang_c(agents=agents, traffic=float(traffic)) > erlang_b(agents=agents, traffic=float(traffic))


@pytest.mark.parametrize(
    ("arrivals_per_hour", "handle", "target", "level", "cap"),
    [
        (200, 180, 20, 0.8, None),
        (200, 180, 20, 0.9, None),
        (200, 180, 20, 0.8, 0.7),
        (30, 600, 60, 0.8, None),
        (5, 300, 3600, 0.95, None),
        (720, 240, 15, 0.8, None),
        (720, 240, 15, 0.95, 0.85),
        (1, 60, 0, 0.5, None),
        (400, 90, 30, 0.99, None),
    ],
)
def test_agents_needed_matches_brute_force_over_exact_formula(arrivals_per_hour, handle, target, level, cap):
    got = agents_for_service_level(
        arrivals_per_hour=arrivals_per_hour,
        handle_seconds=handle,
        target_seconds=target,
        service_level=level,
        max_occupancy=cap,
    )
    assert got == brute_force_agents(arrivals_per_hour, handle, target, level, cap)


# --- large traffic ------------------------------------------------------------------------------------------------


def test_thousand_erlangs_does_not_overflow_and_matches_high_precision_formula():
    with pytest.raises(OverflowError):
        float(1000) ** 1050  # the textbook numerator alone is out of float range
    for agents in (1001, 1010, 1030, 1050):
        got = erlang_c(agents=agents, traffic=1000.0)
        assert 0.0 < got < 1.0
        assert got == pytest.approx(float(decimal_erlang_c(agents, 1000)), rel=1e-10)


def test_staffing_for_thousands_of_erlangs():
    # 36 000 arrivals an hour at 300 s each: 3000 Erlangs.
    needed = agents_for_service_level(arrivals_per_hour=36_000, handle_seconds=300, target_seconds=20)
    assert needed is not None
    assert needed > 3000
    at = service_level(agents=needed, traffic=3000.0, handle_seconds=300, target_seconds=20)
    below = service_level(agents=needed - 1, traffic=3000.0, handle_seconds=300, target_seconds=20)
    assert below < 0.8 <= at
    # Economies of scale: a few percent above the load, far less than the 40 % slack of the 10-Erlang example.
    assert needed < 3000 * 1.05
    # 100 000 Erlangs still computes (beyond the default cap, so the cap must be raised).
    assert agents_for_service_level(arrivals_per_hour=1_200_000, handle_seconds=300, target_seconds=20) is None
    big = agents_for_service_level(
        arrivals_per_hour=1_200_000, handle_seconds=300, target_seconds=20, max_agents=200_000
    )
    assert big is not None and 100_000 < big < 101_000


# --- monotonicity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("traffic", [0.5, 3.2, 10.0, 48.0, 250.5, 1000.0])
def test_more_agents_means_less_waiting(traffic):
    first = math.floor(traffic) + 1
    cs, sls, asas = [], [], []
    for agents in range(first, first + 60):
        cs.append(erlang_c(agents=agents, traffic=traffic))
        sls.append(service_level(agents=agents, traffic=traffic, handle_seconds=240, target_seconds=20))
        asas.append(average_speed_of_answer(agents=agents, traffic=traffic, handle_seconds=240))
    assert all(x >= y for x, y in itertools.pairwise(cs))
    assert all(x <= y for x, y in itertools.pairwise(sls))
    assert all(x >= y for x, y in itertools.pairwise(asas))
    # strictly, while the values are not yet saturated at float precision
    assert cs[0] > cs[1] and sls[0] < sls[1] and asas[0] > asas[1]


def test_longer_target_and_more_traffic_behave():
    sls = [service_level(agents=14, traffic=10.0, handle_seconds=180, target_seconds=t) for t in (0, 10, 20, 60, 600)]
    assert sls == sorted(sls)
    assert sls[0] == pytest.approx(1 - erlang_c(agents=14, traffic=10.0))  # within 0 s = answered at once
    needs = [
        agents_for_service_level(arrivals_per_hour=rate, handle_seconds=180, target_seconds=20)
        for rate in (10, 50, 100, 200, 400, 800)
    ]
    assert needs == sorted(needs)
    levels = [
        agents_for_service_level(arrivals_per_hour=200, handle_seconds=180, target_seconds=20, service_level=level)
        for level in (0.5, 0.8, 0.9, 0.95, 0.99)
    ]
    assert levels == sorted(levels)


# --- edge cases ---------------------------------------------------------------------------------------------------


def test_no_arrivals_needs_no_agents():
    assert agents_for_service_level(arrivals_per_hour=0, handle_seconds=180, target_seconds=20) == 0
    assert agents_for_service_level(arrivals_per_hour=0.0, handle_seconds=180, target_seconds=20, max_agents=0) == 0
    assert erlang_c(agents=0, traffic=0.0) == 0.0
    assert erlang_c(agents=3, traffic=0.0) == 0.0
    assert service_level(agents=0, traffic=0.0, handle_seconds=180, target_seconds=20) == 1.0
    assert average_speed_of_answer(agents=0, traffic=0.0, handle_seconds=180) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"handle_seconds": 0},
        {"handle_seconds": -5},
        {"arrivals_per_hour": -1},
        {"target_seconds": -1},
        {"service_level": 1.5},
        {"service_level": -0.1},
        {"max_occupancy": 0},
        {"max_occupancy": 1.2},
        {"max_agents": -1},
        {"arrivals_per_hour": math.nan},
        {"handle_seconds": math.inf},
        {"target_seconds": math.nan},
    ],
)
def test_invalid_inputs_give_none(kwargs):
    args = {"arrivals_per_hour": 200, "handle_seconds": 180, "target_seconds": 20} | kwargs
    assert agents_for_service_level(**args) is None


def test_handle_time_zero_is_invalid_even_without_arrivals():
    assert agents_for_service_level(arrivals_per_hour=0, handle_seconds=0, target_seconds=20) is None


def test_impossible_targets_give_none():
    cch = {"arrivals_per_hour": 200, "handle_seconds": 180, "target_seconds": 20}
    # 100 % within the target never happens while anyone arrives: C · exp(...) > 0 for every N.
    assert agents_for_service_level(**cch, service_level=1) is None
    # The answer (14) is above the cap.
    assert agents_for_service_level(**cch, max_agents=13) is None
    assert agents_for_service_level(**cch, max_agents=14) == 14
    # The load alone (10 Erlangs) needs more agents than the cap.
    assert agents_for_service_level(**cch, max_agents=10) is None
    # A cap on occupancy that no N within max_agents satisfies (10 / 20 = 50 % needs 20 agents).
    assert agents_for_service_level(**cch, max_occupancy=0.5, max_agents=19) is None
    assert agents_for_service_level(**cch, max_occupancy=0.5, max_agents=20) == 20


def test_full_occupancy_cap_and_zero_level():
    # A cap of 100 % only demands a stable queue; a level of 0 is met by the first stable N.
    assert (
        agents_for_service_level(
            arrivals_per_hour=200, handle_seconds=180, target_seconds=20, service_level=0, max_occupancy=1
        )
        == 11
    )
    # Whole-Erlang load: N must be strictly above A.
    assert agents_for_service_level(arrivals_per_hour=60, handle_seconds=60, target_seconds=20, service_level=0) == 2


def test_overloaded_queue():
    assert erlang_c(agents=10, traffic=10.0) == 1.0
    assert erlang_c(agents=5, traffic=10.0) == 1.0
    assert service_level(agents=10, traffic=10.0, handle_seconds=180, target_seconds=20) == 0.0
    assert service_level(agents=0, traffic=0.5, handle_seconds=180, target_seconds=20) == 0.0
    assert average_speed_of_answer(agents=10, traffic=10.0, handle_seconds=180) == math.inf
    assert average_speed_of_answer(agents=9, traffic=10.0, handle_seconds=180) == math.inf


@pytest.mark.parametrize(
    "call",
    [
        lambda: erlang_c(agents=-1, traffic=1.0),
        lambda: erlang_c(agents=2, traffic=-1.0),
        lambda: erlang_c(agents=2, traffic=math.nan),
        lambda: erlang_b(agents=2, traffic=math.inf),
        lambda: service_level(agents=14, traffic=10.0, handle_seconds=0, target_seconds=20),
        lambda: service_level(agents=14, traffic=10.0, handle_seconds=180, target_seconds=-1),
        lambda: average_speed_of_answer(agents=14, traffic=10.0, handle_seconds=-1),
    ],
)
def test_primitives_reject_invalid_inputs(call):
    with pytest.raises(ValueError):
        call()


def test_erlang_b_boundaries():
    assert erlang_b(agents=0, traffic=5.0) == 1.0
    assert erlang_b(agents=1, traffic=1.0) == pytest.approx(0.5)
    assert erlang_b(agents=4, traffic=0.0) == 0.0
