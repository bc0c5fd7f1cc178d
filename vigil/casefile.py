"""The top case of a replay, as a regulator sees it: the account, the case's band and
priority, and the explanation of its strongest alert, rule by rule.

It is asked of the portal over GraphQL with a read-only regulator token (the ``cases``
query, highest priority first). Should the portal refuse (a role it does not grant, a
schema that changed), the same document is read from the database instead and the
report says so and why. The query and its mapping are in one place:
:data:`CASE_QUERY` and :func:`_from_graphql`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# --- The read side's query, and how its answer becomes the case document ---------------
CASE_QUERY = """
query TopCase {
  cases(first: 1, sort: PRIORITY) {
    edges { node {
      id band priority status alertCount typologies
      subject { externalRef }
      alerts {
        score
        assessment { score explanation { band rules {
          code typology concerns fired points observed thresholds reason error
        } } }
        event {
          occurredAt amount currency
          subject { externalRef } counterparty { externalRef }
        }
      }
    } }
  }
}
"""


def _from_graphql(data: dict[str, Any]) -> dict[str, Any] | None:
    edges = data["cases"]["edges"]
    if not edges:
        return None
    case = edges[0]["node"]
    account = (case.get("subject") or {}).get("externalRef")
    alert = max(case["alerts"], key=lambda a: a["score"])
    event = alert["event"]
    parties = [(event.get(side) or {}).get("externalRef") for side in ("subject", "counterparty")]
    others = [party for party in parties if party != account]
    return {
        "caseId": case["id"],
        "account": account,
        "band": case["band"].lower(),
        "priority": case["priority"],
        "status": case["status"].lower(),
        "alertCount": case["alertCount"],
        "typologies": case["typologies"],
        "score": alert["assessment"]["score"],
        "explanation": alert["assessment"]["explanation"],
        "event": {
            "occurredAt": event["occurredAt"],
            "amount": event["amount"],
            "currency": event["currency"],
            "counterparty": others[0] if others else None,
        },
    }


# ----------------------------------------------------------------------------------------

FROM_DATABASE = text(
    "SELECT c.case_id, c.band, c.priority, c.status, c.alert_count, s.external_ref,"
    " (SELECT array_agg(DISTINCT t ORDER BY t) FROM alerts aa, unnest(aa.typologies) t"
    "   WHERE aa.tenant_id = c.tenant_id AND aa.case_id = c.case_id) AS typologies,"
    " x.score, x.explanation, e.occurred_at, e.amount, e.currency,"
    " cp.external_ref AS counterparty"
    " FROM cases c"
    " JOIN subjects s ON s.tenant_id = c.tenant_id AND s.subject_id = c.subject_id"
    " JOIN alerts a ON a.tenant_id = c.tenant_id AND a.case_id = c.case_id"
    " JOIN assessments x ON x.tenant_id = a.tenant_id AND x.assessment_id = a.assessment_id"
    " JOIN events e ON e.tenant_id = a.tenant_id AND e.event_id = a.event_id"
    " LEFT JOIN subjects cp ON cp.tenant_id = e.tenant_id AND cp.subject_id ="
    "   CASE WHEN e.subject_id = c.subject_id THEN e.counterparty_id ELSE e.subject_id END"
    " WHERE c.tenant_id = :t AND c.case_id = :c"
    " ORDER BY a.score DESC, a.created_at LIMIT 1"
)


async def fetch_case(
    client: httpx.AsyncClient, connection: AsyncConnection, tenant_id: uuid.UUID, case_id: uuid.UUID
) -> tuple[dict[str, Any], str]:
    """The case document and where it came from ("GraphQL" or why the database)."""
    # Asked of the portal first; the database answers only when the portal could not.
    body = await _graphql(client, CASE_QUERY, {})
    errors = body.get("errors") or []
    if not errors:
        document = _from_graphql(body["data"])
        if document is not None:
            return document, "GraphQL, with a regulator token"
        why = "the portal listed no case"
    else:
        codes = sorted({str(e.get("extensions", {}).get("code")) for e in errors})
        why = f"the portal answered {', '.join(codes)}"
    row = (await connection.execute(FROM_DATABASE, {"t": tenant_id, "c": case_id})).one()
    document = {
        "caseId": str(row.case_id),
        "account": row.external_ref,
        "band": row.band,
        "priority": row.priority,
        "status": row.status,
        "alertCount": row.alert_count,
        "typologies": list(row.typologies or []),
        "score": row.score,
        "explanation": row.explanation,
        "event": {
            "occurredAt": row.occurred_at.isoformat(),
            "amount": str(row.amount.normalize()),
            "currency": row.currency,
            "counterparty": row.counterparty,
        },
    }
    return document, f"the database, as {why}"


async def _graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    if response.status_code not in (200, 400):
        response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def render(case: dict[str, Any], source: str) -> list[str]:
    """The case and its strongest alert's explanation, one fired rule per paragraph."""
    event = case["event"]
    explanation = case["explanation"]
    rules = explanation.get("rules", [])
    fired = [rule for rule in rules if rule.get("fired")]
    lines = [
        f"top case (read through {source}):",
        f"  case {case['caseId']} on account {case['account']}: band {case['band']},"
        f" priority {case['priority']}, {case['status']}, {case['alertCount']} alert(s),"
        f" typologies {', '.join(case['typologies']) or 'none'}",
        f"  strongest alert: {event['amount']} {event['currency']} with"
        f" {event['counterparty']} at {event['occurredAt']}, score {case['score']}"
        f" ({explanation.get('band')})",
    ]
    for rule in fired:
        lines.append(
            f"    {rule['code']} ({rule['typology']}, +{rule['points']} points,"
            f" concerns the {rule['concerns']}): {rule.get('reason') or ''}"
        )
        lines.append(f"      saw {_compact(rule.get('observed'))}")
        lines.append(f"      against {_compact(rule.get('thresholds'))}")
    lines.append(f"    and {len(rules) - len(fired)} rule(s) that did not fire, each recorded")
    return lines


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))
