"""What each ``tpa import`` entity writes: target table, natural key, geometry, personal and versioned fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import InvalidParameter


@dataclass(frozen=True)
class Entity:
    name: str
    table: str
    key: str
    geom: str | None = None
    geom_type: str | None = None  # POINT | MULTIPOLYGON | GEOMETRY
    geom_required: bool = False
    pseudonymous: tuple[str, ...] = ()  # always HMAC-ed, whatever the mapping says
    versioned: bool = False  # yearly registry: superseded rows go to <table>_history, absent rows are closed
    ref_levels: dict[str, int] = field(default_factory=dict)  # column → required admin level of the unit
    linked_admin: bool = False  # villages: each row is also an admin unit of level 5
    layer: str = ""  # the OGC collection the rows appear in

    @property
    def history(self) -> str | None:
        return f"{self.table}_history" if self.versioned else None


# Fields of the admin unit written with each village (the village table itself has no name or parent).
VILLAGE_ADMIN_FIELDS: dict[str, str] = {"name": "text", "name_en": "text", "parent_code": "text"}

ENTITIES: dict[str, Entity] = {
    "boundaries": Entity("boundaries", "admin_unit", "code", "geom", "MULTIPOLYGON", layer="admin-units"),
    "villages": Entity("villages", "village", "code", "geom_point", "POINT", geom_required=True, linked_admin=True,
                       layer="villages"),
    "households": Entity("households", "household", "hh_id", "geom", "POINT", pseudonymous=("hh_id",),
                         versioned=True, ref_levels={"village_code": 5}, layer="households"),
    "persons": Entity("persons", "person", "person_id", pseudonymous=("person_id", "hh_id"), versioned=True,
                      layer="persons"),
    "projects": Entity("projects", "project", "project_id", "geom", "GEOMETRY", geom_required=True, layer="projects"),
    "facilities": Entity("facilities", "facility", "fac_id", "geom", "POINT", geom_required=True, layer="facilities"),
}


def entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise InvalidParameter(f"unknown entity {name!r}: one of {', '.join(ENTITIES)}") from None
