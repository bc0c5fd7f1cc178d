"""Account-level precision, recall and F1, on small crafted sets."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from vigil.amlsim import laundering_accounts
from vigil.quality import account_quality, measure, naive_flags


def test_figures_count_accounts_once_each() -> None:
    # A1 flagged twice (two alerts) is one account; X9 is flagged but not labelled.
    quality = account_quality(["A1", "A1", "A2", "X9"], ["A1", "A2", "A3", "A4"])

    assert (quality.flagged, quality.labelled, quality.true_positives) == (3, 4, 2)
    assert (quality.false_positives, quality.false_negatives) == (1, 2)
    assert quality.precision == pytest.approx(2 / 3)
    assert quality.recall == pytest.approx(1 / 2)
    assert quality.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


def test_a_perfect_detection_scores_one() -> None:
    quality = account_quality({"A1", "A2"}, {"A2", "A1"})

    assert (quality.precision, quality.recall, quality.f1) == (1.0, 1.0, 1.0)


def test_nothing_flagged_scores_zero_rather_than_failing() -> None:
    quality = account_quality([], ["A1"])

    assert (quality.precision, quality.recall, quality.f1) == (0.0, 0.0, 0.0)


def test_flagging_everything_buys_recall_with_precision() -> None:
    population = [f"A{index}" for index in range(100)]

    quality = account_quality(population, population[:10])

    assert (quality.precision, quality.recall) == (0.1, 1.0)
    assert quality.f1 == pytest.approx(2 * 0.1 / 1.1)


def test_the_summary_shows_the_counts_and_the_figures() -> None:
    summary = account_quality(["A1", "X9"], ["A1", "A2"]).summary()

    assert summary == (
        "flagged 2, labelled 2, true positives 1: precision 0.500, recall 0.500, F1 0.500"
    )


def test_labels_are_read_per_account_as_subject_references(tmp_path: Path) -> None:
    with (tmp_path / "nodes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["nodeid", "isFraud", "init_balance", "fraudStep"])
        writer.writerows([[0, 0, "1.00", -1], [7, 1, "2.00", 12], [12345, 1, "3.00", -1]])

    assert laundering_accounts(tmp_path) == {"AMLSIM-00007", "AMLSIM-12345"}


def test_a_partial_replay_is_judged_within_the_accounts_it_saw() -> None:
    quality = measure(
        flagged={"a", "b", "c", "x"},
        labelled={"a", "b", "d", "e", "y"},
        universe={"a", "b", "c", "d", "e"},
    )

    # "x" and "y" took no part in the replay: neither is counted.
    assert (quality.flagged, quality.labelled, quality.true_positives) == (3, 4, 2)


def test_the_naive_rule_flags_nine_distinct_payees_or_nine_distinct_payers() -> None:
    fan_out = [("hub", f"p{n}") for n in range(9)]
    fan_in = [(f"q{n}", "sink") for n in range(9)]
    # Eight payees and eight payers make sixteen counterparties, but nine in neither
    # direction; repeated transfers to one payee count once.
    mixed = [("mixed", f"r{n}") for n in range(8)] + [(f"s{n}", "mixed") for n in range(8)]
    repeated = [("loyal", "shop")] * 20

    flagged = naive_flags(fan_out + fan_in + mixed + repeated)

    assert flagged == {"hub", "sink"}
