"""Account-level detection quality, and the naive floor it is compared with."""

from __future__ import annotations

import pytest

from vigil.quality import Quality, measure, naive_flags


def test_quality_counts_flagged_accounts_against_the_labels() -> None:
    quality = measure(
        flagged={"a", "b", "c", "x"},
        positives={"a", "b", "d", "e"},
        universe={"a", "b", "c", "d", "e"},
    )

    # "x" took no part in the replay: it is neither flagged nor counted.
    assert quality == Quality(true_positives=2, false_positives=1, false_negatives=2)
    assert quality.precision == pytest.approx(2 / 3)
    assert quality.recall == pytest.approx(2 / 4)
    assert quality.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_nothing_flagged_or_no_positives_gives_zeros_not_an_error() -> None:
    assert measure(set(), {"a"}, {"a"}).f1 == 0.0
    nothing_to_find = measure({"a"}, set(), {"a"})
    assert (nothing_to_find.precision, nothing_to_find.recall) == (0.0, 0.0)


def test_the_naive_rule_flags_nine_distinct_payees_or_nine_distinct_payers() -> None:
    fan_out = [("hub", f"p{n}") for n in range(9)]
    fan_in = [(f"q{n}", "sink") for n in range(9)]
    # Eight payees and eight payers make sixteen counterparties, but nine in neither
    # direction; repeated transfers to one payee count once.
    mixed = [("mixed", f"r{n}") for n in range(8)] + [(f"s{n}", "mixed") for n in range(8)]
    repeated = [("loyal", "shop")] * 20

    flagged = naive_flags(fan_out + fan_in + mixed + repeated)

    assert flagged == {"hub", "sink"}
