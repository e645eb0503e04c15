"""select() against btrbk's own schedule(), on generated cases (see btrbk_cases.py).

Both must keep the same snapshots, except what replicator documents as additions (the newest
snapshot, snapshots dated after now). The reference is btrbk with its month slip corrected (the
README says why); a second check shows that the slip is the only thing that correction changes.

The hypothesis run has a fixed budget for CI; for a longer run by hand:

    REPLICATOR_BTRBK_EXAMPLES=20000 uv run --frozen pytest tests/core/test_btrbk_differential.py
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from btrbk_cases import Btrbk, Case, agrees, bug_applies, make_case, ours

EXAMPLES = int(os.environ.get("REPLICATOR_BTRBK_EXAMPLES", "200"))


@pytest.fixture(scope="module")
def btrbk():
    Btrbk.require()
    process = Btrbk()
    yield process
    process.close()


def check(case: Case, answer: dict) -> None:
    keep = ours(case)
    assert agrees(case, keep, answer["kept_fixed"]), (
        f"{case}\nreplicator keeps {[i for i, k in enumerate(keep) if k]}\n"
        f"btrbk keeps      {answer['kept_fixed']}")
    if answer["kept"] != answer["kept_fixed"]:
        assert bug_applies(case), f"btrbk's month correction changed a case it should not:\n{case}"


def test_a_seeded_batch_matches_btrbk(btrbk):
    rng = random.Random(15)
    cases = [make_case(rng) for _ in range(1000)]
    for case, answer in zip(cases, btrbk.run(cases)):
        check(case, answer)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_any_case_matches_btrbk(btrbk, rng):
    case = make_case(rng)
    check(case, btrbk.run([case])[0])
