"""Secondary suppression of totals over a hierarchy of areas (docs/methodology.md#admin-totals).

Village figures of 1–4 households are withheld. A township total published next to them would give a withheld
figure back by subtraction (the total minus the published villages), and so would a county total minus the
published townships and villages, at any depth. This module decides which totals of the administrative units can
be published, bottom-up, so that no such subtraction recovers a withheld figure or a group of fewer than ``k``.

For a unit A and a measure, the *frontier* is what an attacker is left with after subtracting every published
figure below A: descending from A, a published unit is known (it and everything below it are subtracted as one
figure), a withheld unit with units below it is descended into, and a withheld unit at the finest level of the
measure is an unknown. A is published only when, for every measure, the frontier is empty, or it holds at least
two unknowns whose sum is at least ``k`` (or zero). A unit whose own figure is between 1 and k−1 is withheld
first (primary suppression). Units are decided deepest level first, so a unit's frontier is known when it is
decided; withholding a unit never makes a figure below it recoverable (fewer figures are published).

When a total fails only because of what is withheld below it, one more of its children is withheld instead (the
one with the smallest figures among those that add unknowns to the residual), until the total is safe; only when
no child can help is the total itself withheld. So a county's total survives at the cost of one township's.

This is the telecom release's residual rule (app/telecom/privacy.py) for a tree of any depth, with all measures of
a unit withheld together: the measures of one unit are linked (registered = poor + exited + monitored), so
publishing one of them could give another back. It is greedy, not an optimal (least-loss) suppression such as
tau-Argus's; it is simple to audit, and tests/test_portal_figures.py plays the attacker against its output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Hierarchy:
    """Units with their parent and level (0 country … 5 village); levels grow downwards."""

    parent: dict[str, str | None]
    level: dict[str, int]
    children: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.children = {code: [] for code in self.parent}
        for code, up in self.parent.items():
            if up is not None and up in self.children:
                self.children[up].append(code)

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str | None, int]]) -> Hierarchy:
        parent, level = {}, {}
        for code, up, lv in rows:
            parent[code], level[code] = up, int(lv)
        return cls({c: (u if u in parent else None) for c, u in parent.items()}, level)


def primary(value: int | None, k: int) -> bool:
    """A count that is withheld for itself: between 1 and k − 1."""
    return value is not None and 0 < value < k


def withhold_totals(tree: Hierarchy, values: Mapping[str, Mapping[str, int]], finest: Mapping[str, int],
                    withheld_leaves: Mapping[str, set[str]], decide_below: int, k: int = 5,
                    forced: Iterable[str] = ()) -> set[str]:
    """The units of level < ``decide_below`` whose figures must be withheld.

    ``values[measure][unit]``: the true figure of every unit (missing = 0). ``finest[measure]``: the deepest level
    at which the measure is published. ``withheld_leaves[measure]``: units at levels ≥ ``decide_below`` (decided
    elsewhere, e.g. villages by their own rule) withheld for that measure; the others there are published.
    ``forced``: units withheld whatever their figures (e.g. because another table's withheld figure would follow
    from theirs), treated like primary suppressions.
    """
    withheld: set[str] = set()
    forced = set(forced)

    def unknowns(code: str, measure: str, out: list[str]) -> None:
        """The unknowns below ``code`` (a withheld unit) for ``measure``, into ``out``."""
        kids = [c for c in tree.children.get(code, ()) if tree.level[c] <= finest[measure]]
        if not kids:
            out.append(code)
            return
        for c in kids:
            if not published(c, measure):
                unknowns(c, measure, out)

    def published(code: str, measure: str) -> bool:
        if tree.level[code] >= decide_below:
            return code not in withheld_leaves.get(measure, ())
        return code not in withheld

    def frontier(code: str, measure: str) -> list[str]:
        """The unknowns left below ``code`` for ``measure`` once every published figure below it is subtracted."""
        left: list[str] = []
        for c in tree.children.get(code, ()):
            if tree.level[c] <= finest[measure] and not published(c, measure):
                unknowns(c, measure, left)
        return left

    def failing(code: str) -> list[str]:
        """The measures whose total at ``code`` would give back a withheld figure or a group smaller than k."""
        out = []
        for m in values:
            if tree.level[code] > finest[m]:
                continue
            left = frontier(code, m)
            residual = sum(values[m].get(c, 0) for c in left)
            if left and (len(left) == 1 or 0 < residual < k):
                out.append(m)
        return out

    def helps(child: str, bad: list[str]) -> bool:
        """Whether withholding ``child`` (decided here, published so far) adds unknowns for a failing measure: it is
        one itself (at the measure's finest level), or it has some below it (else its figure is the sum of
        published ones and withholding it changes nothing)."""
        if tree.level[child] >= decide_below or child in withheld:
            return False
        return any(tree.level[child] == finest[m] or (tree.level[child] < finest[m] and frontier(child, m))
                   for m in bad)

    def loss(code: str) -> tuple[int, str]:
        return sum(values[m].get(code, 0) for m in values), code

    for code in sorted((c for c in tree.parent if tree.level[c] < decide_below), key=lambda c: -tree.level[c]):
        if code in forced or any(primary(values[m].get(code, 0), k) for m in values):
            withheld.add(code)
            continue
        # Rather than withhold this total, withhold one more of its children (the smallest whose own unknowns
        # would join the residual), as long as that makes the total safe: a county's total is worth more to an
        # office than one township's. Children are decided already; withholding more of them keeps them safe.
        added: list[str] = []
        while bad := failing(code):
            options = [c for c in tree.children.get(code, ()) if helps(c, bad)]
            if not options:  # no child can make it safe: the total is withheld, the children tried are not
                withheld.difference_update(added)
                withheld.add(code)
                break
            added.append(min(options, key=loss))
            withheld.add(added[-1])
    return withheld
