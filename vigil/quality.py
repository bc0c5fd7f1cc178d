"""How well detection finds the accounts known to launder: account-level precision,
recall and F1.

The unit is the account, because that is what an investigator works on and what a
labelled data set such as AMLSim marks: an account is **flagged** when it has at least
one alert (and so a case), and **labelled** when the data says it took part in
laundering. Then

- precision = labelled flagged accounts / flagged accounts (how many cases were worth
  opening);
- recall = labelled flagged accounts / labelled accounts (how much of the laundering was
  found);
- F1 = their harmonic mean, 2PR / (P + R).

How many alerts an account has does not matter, nor which of its transfers raised them.
A flagged account outside the labelled population's universe still counts against
precision. With nothing flagged, precision is taken as 0 (nothing useful was found),
and F1 is 0 when both figures are.

A replay of part of a bank is judged within a universe (:func:`measure`): the accounts
that took part in the transfers replayed. The naive floor is the rule the sample bank's
README quotes (:func:`naive_flags`): flag an account with nine or more distinct
counterparties in one direction (nine payees, or nine payers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Set
from dataclasses import dataclass

NAIVE_MIN_COUNTERPARTIES = 9


@dataclass(frozen=True, slots=True)
class AccountQuality:
    flagged: int
    labelled: int
    true_positives: int

    @property
    def false_positives(self) -> int:
        return self.flagged - self.true_positives

    @property
    def false_negatives(self) -> int:
        return self.labelled - self.true_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.labelled if self.labelled else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    def summary(self) -> str:
        return (
            f"flagged {self.flagged}, labelled {self.labelled}, true positives"
            f" {self.true_positives}: precision {self.precision:.3f}, recall"
            f" {self.recall:.3f}, F1 {self.f1:.3f}"
        )


def account_quality(flagged: Iterable[str], labelled: Iterable[str]) -> AccountQuality:
    """Compare the accounts detection flagged with the accounts known to launder; each
    account counts once, however often it is named."""
    flagged_set, labelled_set = set(flagged), set(labelled)
    return AccountQuality(len(flagged_set), len(labelled_set), len(flagged_set & labelled_set))


def measure(flagged: Set[str], labelled: Set[str], universe: Set[str]) -> AccountQuality:
    """:func:`account_quality` of both sets taken within ``universe``."""
    return account_quality(flagged & universe, labelled & universe)


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
