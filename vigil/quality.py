"""Detection quality per account: precision, recall and F1 against labels.

A bank's labels name accounts, not transfers, so quality is counted per account: an
account is flagged when at least one alert concerns it, and it is a true positive when
its label says it launders. The universe is the accounts that took part in the transfers
replayed, so that a partial replay is judged on what it could have seen.

The naive floor is the rule the sample bank's README quotes: flag an account that has
nine or more distinct counterparties in one direction (nine payees, or nine payers).
Any detection worth its name must clear it by far.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass

NAIVE_MIN_COUNTERPARTIES = 9


@dataclass(frozen=True, slots=True)
class Quality:
    """Counts of a flagged set against the positives, and the ratios they give."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def flagged(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def describe(self) -> str:
        return (
            f"precision {self.precision:.2f}, recall {self.recall:.2f}, F1 {self.f1:.2f}"
            f" ({self.flagged} flagged, {self.true_positives} of"
            f" {self.true_positives + self.false_negatives} launderers)"
        )


def measure(flagged: Set[str], positives: Set[str], universe: Set[str]) -> Quality:
    """Quality of ``flagged`` against ``positives``, both taken within ``universe``."""
    flagged = flagged & universe
    positives = positives & universe
    true_positives = len(flagged & positives)
    return Quality(
        true_positives=true_positives,
        false_positives=len(flagged) - true_positives,
        false_negatives=len(positives) - true_positives,
    )


def naive_flags(
    transfers: Iterable[tuple[str, str]], min_counterparties: int = NAIVE_MIN_COUNTERPARTIES
) -> set[str]:
    """Accounts with at least ``min_counterparties`` distinct payees or distinct payers
    among ``transfers`` (pairs of originator and beneficiary)."""
    payees: defaultdict[str, set[str]] = defaultdict(set)
    payers: defaultdict[str, set[str]] = defaultdict(set)
    for originator, beneficiary in transfers:
        payees[originator].add(beneficiary)
        payers[beneficiary].add(originator)
    return {
        account
        for counterparties in (payees, payers)
        for account, others in counterparties.items()
        if len(others) >= min_counterparties
    }
