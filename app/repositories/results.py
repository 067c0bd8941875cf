"""SQL for the results of executions: listing them, keeping them longer, publishing and unpublishing them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import text

from app.errors import InvalidData, NotFound

_LIST = text("""
SELECT r.run_id, substring(r.kind FROM 9) AS process, r.owner, r.params->>'owner_name' AS owner_name, r.created,
  r.expires, r.pruned, count(p.layer_id) AS layers, count(p.layer_id) FILTER (WHERE p.listed) AS listed,
  coalesce(array_agg(p.layer_id ORDER BY p.layer_id) FILTER (WHERE p.layer_id IS NOT NULL), '{}') AS layer_ids
FROM analysis_run r LEFT JOIN published_layer p ON p.run_id = r.run_id
WHERE r.kind LIKE 'process:%' AND r.status = 'successful' AND (:pruned OR r.pruned IS NULL)
GROUP BY r.run_id ORDER BY r.created DESC LIMIT :limit
""")


async def list_results(conn: Any, include_pruned: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(_LIST, {"pruned": include_pruned, "limit": limit})).mappings()]


async def keep_results(conn: Any, job: str, until: dt.datetime | None) -> dt.datetime | None:
    """Set when a job's results expire (None: kept until deleted); refused for results already deleted."""
    try:
        run_id = uuid.UUID(job)
    except ValueError:
        raise NotFound(f"There is no job '{job}'.") from None
    row = (await conn.execute(text("SELECT pruned FROM analysis_run WHERE run_id = :id AND kind LIKE 'process:%'"),
                              {"id": run_id})).first()
    if row is None:
        raise NotFound(f"There is no job '{job}'.")
    if row.pruned is not None:
        raise InvalidData(f"The results of the job '{job}' were deleted on {row.pruned:%Y-%m-%d %H:%M}.")
    await conn.execute(text("UPDATE analysis_run SET expires = :until, updated = now() WHERE run_id = :id"),
                       {"until": until, "id": run_id})
    return until


async def set_listed(conn: Any, layer_id: str, listed: bool, keep_for: dt.timedelta) -> uuid.UUID:
    """Publish (list in /collections, keep until unpublished) or unpublish a job's result collection; unpublished,
    the job's results expire ``keep_for`` from now unless another of its collections is still published."""
    run_id = await conn.scalar(text("UPDATE published_layer SET listed = :listed WHERE layer_id = :id "
                                    "AND run_id IS NOT NULL RETURNING run_id"), {"listed": listed, "id": layer_id})
    if run_id is None:
        raise NotFound(f"There is no result collection '{layer_id}' (see `tpa results list`).")
    if listed:
        await conn.execute(text("UPDATE analysis_run SET expires = NULL, updated = now() WHERE run_id = :id"),
                           {"id": run_id})
    else:
        await conn.execute(text(
            "UPDATE analysis_run SET expires = now() + :keep, updated = now() WHERE run_id = :id AND NOT EXISTS "
            "(SELECT 1 FROM published_layer WHERE run_id = :id AND listed)"), {"id": run_id, "keep": keep_for})
    return run_id


async def is_result(conn: Any, layer_id: str) -> bool:
    return bool(await conn.scalar(text("SELECT 1 FROM published_layer WHERE layer_id = :id AND run_id IS NOT NULL"),
                                  {"id": layer_id}))
