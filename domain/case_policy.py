"""A tenant's case policy: how long each band may wait, which queue a case goes to, and
whether one analyst may close a low case alone.

High, medium and critical cases always need a second person's approval; the policy can
only relax that for low ones. A policy is stored per tenant as a JSON document:

    {"slaHours": {"low": 720, "critical": 12},
     "lowClosesAlone": true,
     "queues": [{"name": "sanctions", "typologies": ["sanctions"]},
                {"name": "urgent", "bands": ["high", "critical"]}]}

Every key is optional. Queues are tried in order; the first whose bands and typologies
both match (an empty list matches anything) takes the case, else ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from domain.cases import DEFAULT_SLA
from domain.errors import InvalidCaseInput
from domain.rules import Band
from domain.text import unprintable

DEFAULT_QUEUE = "default"
QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_QUEUES = 50
MAX_NAMES = 100
MAX_SLA_HOURS = 24 * 365


@dataclass(frozen=True, slots=True)
class QueueRoute:
    name: str
    bands: frozenset[Band] = frozenset()
    typologies: frozenset[str] = frozenset()

    def takes(self, band: Band, typologies: Iterable[str]) -> bool:
        band_fits = not self.bands or band in self.bands
        typology_fits = not self.typologies or bool(self.typologies.intersection(typologies))
        return band_fits and typology_fits


@dataclass(frozen=True, slots=True)
class CasePolicy:
    sla: Mapping[Band, timedelta] = field(default_factory=lambda: dict(DEFAULT_SLA))
    low_closes_alone: bool = False
    routes: tuple[QueueRoute, ...] = ()

    def needs_approval(self, band: Band) -> bool:
        """Whether closing a case of this band takes a supervisor's approval."""
        return not (band is Band.LOW and self.low_closes_alone)

    def queue_for(self, band: Band, typologies: Iterable[str]) -> str:
        found = tuple(typologies)
        for route in self.routes:
            if route.takes(band, found):
                return route.name
        return DEFAULT_QUEUE


DEFAULT_POLICY = CasePolicy()


def parse_policy(document: Mapping[str, Any]) -> CasePolicy:
    """A policy from its JSON document; raise :class:`InvalidCaseInput` naming the field."""
    unknown = set(document) - {"slaHours", "lowClosesAlone", "queues"}
    if unknown:
        raise InvalidCaseInput(f"unknown key {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    low_closes_alone = document.get("lowClosesAlone", False)
    if not isinstance(low_closes_alone, bool):
        raise InvalidCaseInput("must be true or false", field="lowClosesAlone")
    return CasePolicy(
        sla=_sla(document.get("slaHours", {})),
        low_closes_alone=low_closes_alone,
        routes=_routes(document.get("queues", [])),
    )


def policy_document(policy: CasePolicy) -> dict[str, Any]:
    """The JSON document of a policy (what :func:`parse_policy` reads)."""
    return {
        "slaHours": {band.value: policy.sla[band] / timedelta(hours=1) for band in Band},
        "lowClosesAlone": policy.low_closes_alone,
        "queues": [
            {
                "name": route.name,
                "bands": sorted(band.value for band in route.bands),
                "typologies": sorted(route.typologies),
            }
            for route in policy.routes
        ],
    }


def _sla(raw: object) -> dict[Band, timedelta]:
    if not isinstance(raw, Mapping):
        raise InvalidCaseInput("must be an object of hours per band", field="slaHours")
    sla = dict(DEFAULT_SLA)
    for key, hours in raw.items():
        if key not in Band._value2member_map_:
            raise InvalidCaseInput(f"unknown band {key!r}", field=f"slaHours.{key}")
        valid = isinstance(hours, int | float) and not isinstance(hours, bool)
        if not valid or not 0 < hours <= MAX_SLA_HOURS:
            raise InvalidCaseInput(f"hours between 0 and {MAX_SLA_HOURS}", field=f"slaHours.{key}")
        sla[Band(key)] = timedelta(hours=hours)
    return sla


def _routes(raw: object) -> tuple[QueueRoute, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_QUEUES:
        raise InvalidCaseInput(f"a list of at most {MAX_QUEUES} queues", field="queues")
    routes = []
    for index, item in enumerate(raw):
        where = f"queues.{index}"
        if not isinstance(item, Mapping) or set(item) - {"name", "bands", "typologies"}:
            raise InvalidCaseInput("an object of name, bands and typologies", field=where)
        name = item.get("name")
        if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
            raise InvalidCaseInput("a lower-case name of 1 to 63 characters", field=where)
        bands = _strings(item.get("bands", []), f"{where}.bands")
        if not bands <= set(Band._value2member_map_):
            raise InvalidCaseInput("unknown band", field=f"{where}.bands")
        typologies = _strings(item.get("typologies", []), f"{where}.typologies")
        routes.append(QueueRoute(name, frozenset(Band(b) for b in bands), typologies))
    return tuple(routes)


def _strings(raw: object, where: str) -> frozenset[str]:
    """At most :data:`MAX_NAMES` names of 1 to 64 printable characters: the document is
    stored as given (JSONB, which cannot hold NUL) and read on every scoring."""
    if (
        not isinstance(raw, list)
        or len(raw) > MAX_NAMES
        or not all(
            isinstance(x, str) and 0 < len(x) <= 64 and not unprintable(x, multiline=False)
            for x in raw
        )
    ):
        raise InvalidCaseInput(f"a list of at most {MAX_NAMES} short names", field=where)
    return frozenset(raw)
