"""The draft sizer (``DraftSizer``): costs and acceptance given, not timed, so each cut is exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrldec.speculative.adaptive import DraftSizer
from ctrldec.speculative.drafters import Draft


def _sizer(costs: dict[int, float], kept: int = 0, seen: int = 0, n: int = 8) -> DraftSizer:
    """Pass costs by width (one row); ``seen`` verifications of ``n`` tokens, ``kept`` of them whole."""
    s = DraftSizer()
    for width, seconds in costs.items():
        s.measured(1, width, seconds)
    for i in range(seen):
        s.observe("d", n, list(range(n)) if i < kept else [])
    return s


def test_a_draft_that_is_always_kept_and_nearly_free_is_scored_whole():
    s = _sizer({w: 1.0 + 0.01 * (w - 1) for w in range(1, 10)}, kept=50, seen=50)
    assert s.cut(Draft(list(range(8))), "d", rows=1, fed=1, width=1) == 8


def test_a_draft_that_is_never_kept_is_not_scored_when_width_costs():
    s = _sizer({w: 1.0 + 0.2 * (w - 1) for w in range(1, 10)}, kept=0, seen=50)
    assert s.cut(Draft(list(range(8))), "d", rows=1, fed=1, width=1) == 0


def test_the_cut_maximises_expected_tokens_per_second():
    # a CPU-like curve: 3 tokens barely dearer than 1, then a step
    costs = {1: 1.0, 2: 1.02, 3: 1.05, 4: 1.6, 5: 1.65, 6: 1.7, 7: 1.75, 8: 1.8, 9: 1.85}
    s = DraftSizer()
    for width, seconds in costs.items():
        s.measured(1, width, seconds)
    for kept in [0] * 10 + [1] * 6 + [2] * 3 + [3] * 1:  # the chance to keep position j falls with j
        s.observe("d", 8, list(range(kept)))
    p = s.acceptance("d")
    gains = [1 + sum(p[:m]) for m in range(9)]
    best = max(range(9), key=lambda m: gains[m] / costs[1 + m])
    assert s.cut(Draft(list(range(8))), "d", rows=1, fed=1, width=1) == best == 2


def test_acceptance_starts_at_the_prior_and_follows_what_was_kept():
    s = DraftSizer(longest=4)
    assert list(s.acceptance("d")) == [0.5] * 4
    for _ in range(8):
        s.observe("d", 3, [0])  # three scored, the first kept
    assert s.acceptance("d") == pytest.approx([9 / 10, 1 / 10, 1 / 10, 1 / 2])
    assert list(s.acceptance("other")) == [0.5] * 4  # per drafter


def test_unmeasured_widths_interpolate_between_and_extrapolate_optimistically():
    s = DraftSizer()
    assert s.cost(1, 1) == 1.0 and s.cost(1, 3) == pytest.approx(1.1)  # the prior before any pass
    s.measured(1, 1, 2.0)
    s.measured(1, 5, 4.0)
    assert s.cost(1, 3) == pytest.approx(3.0)
    assert s.cost(1, 7) == pytest.approx(4.0 * (1 + 0.05 * 2))
    s.measured(1, 5, 6.0)  # an exponential average, not the last pass alone
    assert 4.0 < s.cost(1, 5) < 6.0


@given(st.lists(st.floats(0.5, 3.0), min_size=9, max_size=9), st.integers(0, 40), st.integers(0, 8))
def test_the_cut_is_within_the_draft(costs, seen, length):
    s = _sizer({w + 1: c for w, c in enumerate(costs)}, kept=seen // 2, seen=seen)
    assert 0 <= s.cut(Draft(list(range(length))), "d", rows=1, fed=1, width=1) <= length


def test_a_drafter_whose_drafts_cost_more_than_they_keep_is_not_asked():
    """A pass costs 1.0 (1.05 one token wider); a draft model's one-token draft takes 0.3 and is
    kept 25% of the time: (1 + 0.25) / 1.35 < 1 / 1.0, so it is skipped; kept 60% of the time
    (1.6 / 1.35 > 1) it is asked. A lookup that takes no time is always asked."""
    s = _sizer({1: 1.0, 2: 1.05, 3: 1.1}, kept=25, seen=100, n=1)
    s.drafted("d", 0.3, 1)
    s.drafted("lookup", 0.001, 4)
    assert not s.worth_asking("d", rows=1, fed=1)
    assert s.worth_asking("lookup", rows=1, fed=1)
    assert s.worth_asking("new", rows=1, fed=1)  # nothing measured yet: tried
    good = _sizer({1: 1.0, 2: 1.05, 3: 1.1}, kept=60, seen=100, n=1)
    good.drafted("d", 0.3, 1)
    assert good.worth_asking("d", rows=1, fed=1)


def test_a_skipped_drafter_is_asked_again_after_16_32_64_skips():
    s = _sizer({1: 1.0, 2: 1.05}, kept=0, seen=100, n=1)
    s.drafted("d", 0.5, 1)
    asked = [i + 1 for i in range(100) if s.worth_asking("d", rows=1, fed=1)]
    assert asked == [16, 32, 64]
