"""Minimum-count suppression with secondary roll-up, in portable SQL (docs/methodology.md#telecom-suppression).

A count or a statistic is published only where **more than k distinct devices** contribute (FlowKit's rule).
Rows that fail are not dropped at once: their devices roll up into the H3 parent cell, one resolution at a time
down to a floor resolution, and a parent row is published when the devices of its *suppressed* children alone
exceed k. A parent row therefore never includes a published child, so no suppressed value can be recovered by
subtracting published rows from a published total. What is still ≤ k at the floor is not published at all.

H3 parents are computed with integer masks (the index keeps its resolution in bits 52–55 and one 3-bit digit per
resolution below bit 45; a parent has its resolution field set and the finer digits set to 7), so the SQL needs no
H3 extension and runs the same on DuckDB and Spark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_RES_SHIFT = 52
_RES_MASK = 0xF << _RES_SHIFT


def _digit_bits(res: int) -> int:
    return 0x7 << ((15 - res) * 3)


def parent_masks(res: int) -> tuple[int, int]:
    """(clear, set) so that parent = (cell & clear) | set for a cell finer than ``res``."""
    finer = 0
    for r in range(res + 1, 16):
        finer |= _digit_bits(r)
    clear = ~(_RES_MASK | finer) & 0x7FFF_FFFF_FFFF_FFFF
    return clear, (res << _RES_SHIFT) | finer


def parent_sql(col: str, res: int) -> str:
    clear, set_ = parent_masks(res)
    return f"(({col} & {clear}) | {set_})"


def parent_int(cell: int, res: int) -> int:
    clear, set_ = parent_masks(res)
    return (cell & clear) | set_


Materialize = Callable[[str, str], None]  # (table name, SELECT) → the engine creates or replaces the table


def suppress_rollup(materialize: Materialize, *, membership: str, keys: Sequence[str], k: int, base_res: int,
                    floor_res: int, stat: str | None = None, out: str = "published",
                    cell_keys: Sequence[str] = ()) -> None:
    """Publish ``(cell, h3_res, *keys, n_devices[, stat])`` from ``membership(dev, cell, *keys[, x])``.

    ``stat`` is an aggregate over ``x`` (e.g. the median), published with the count under the same rule.
    ``cell_keys`` are key columns that are H3 cells too (the destination of an OD pair): they roll up with
    ``cell``.
    """
    if floor_res > base_res:
        raise ValueError("the floor resolution is coarser than (or equal to) the base resolution")
    key_cols = "".join(f", {c}" for c in keys)
    stat_col = f", {stat} AS stat" if stat else ""
    stat_sel = ", stat" if stat else ""
    x_col = ", x" if stat else ""
    rem = f"{out}_rem{base_res}"
    materialize(rem, f"SELECT dev, cell{key_cols}{x_col} FROM ({membership}) m")
    parts: list[str] = []
    for res in range(base_res, floor_res - 1, -1):
        if res < base_res:  # the devices of still-suppressed rows move up to the parent cell
            nxt = f"{out}_rem{res}"
            moved = "".join(f", {parent_sql(c, res)} AS {c}" if c in cell_keys else f", {c}" for c in keys)
            materialize(nxt, f"SELECT dev, {parent_sql('cell', res)} AS cell{moved}{x_col} FROM {out}_left{res + 1}")
            rem = nxt
        materialize(f"{out}_g{res}", f"SELECT cell{key_cols}, COUNT(DISTINCT dev) AS n_devices{stat_col} "
                                     f"FROM {rem} GROUP BY cell{key_cols}")
        parts.append(f"SELECT cell, {res} AS h3_res{key_cols}, n_devices{stat_sel} FROM {out}_g{res} "
                     f"WHERE n_devices > {int(k)}")
        on = " AND ".join(["g.cell = r.cell", *(f"g.{c} = r.{c}" for c in keys)])
        materialize(f"{out}_left{res}", f"SELECT r.* FROM {rem} r JOIN {out}_g{res} g ON {on} "
                                        f"WHERE g.n_devices <= {int(k)}")
    materialize(out, " UNION ALL ".join(parts))


def admin_with_residual_check(materialize: Materialize, *, membership: str, admin_counts: str, published: str,
                              k: int, out: str) -> None:
    """Admin-unit counts (computed from the device-level table) that cannot reveal a suppressed cell.

    For a unit A, subtracting every published cell row that lies wholly inside A from A's count leaves the
    devices of A's unpublished cells. When that residual is between 1 and k, publishing A would disclose a group
    of k or fewer, so A is suppressed too (``n_devices`` NULL, ``suppressed`` true).

    ``membership(dev, cell)`` at the base resolution with ``cell_admin(cell, admin_code)``; ``published(cell,
    h3_res, n_devices)``; ``admin_counts(admin_code, n_devices)``.
    """
    materialize(f"{out}_cover", (
        "SELECT p.cell, p.h3_res, MIN(a.admin_code) AS admin_code, COUNT(DISTINCT a.admin_code) AS n_admins "
        f"FROM {published} p JOIN (SELECT DISTINCT cell FROM ({membership}) mm) m ON "
        + " OR ".join(f"(p.h3_res = {r} AND {parent_sql('m.cell', r)} = p.cell)" for r in range(0, 16))
        + " JOIN cell_admin a ON a.cell = m.cell GROUP BY p.cell, p.h3_res"))
    small = f"((r.residual > 0 AND r.residual <= {int(k)}) OR c.n_devices <= {int(k)})"
    materialize(out, (
        f"SELECT c.admin_code, CASE WHEN {small} THEN NULL ELSE c.n_devices END AS n_devices, {small} AS suppressed "
        f"FROM ({admin_counts}) c JOIN ("
        f" SELECT c2.admin_code, c2.n_devices - COALESCE(SUM(p.n_devices), 0) AS residual FROM ({admin_counts}) c2"
        f" LEFT JOIN {out}_cover v ON v.admin_code = c2.admin_code AND v.n_admins = 1"
        f" LEFT JOIN {published} p ON p.cell = v.cell AND p.h3_res = v.h3_res"
        " GROUP BY c2.admin_code, c2.n_devices) r ON r.admin_code = c.admin_code"))
