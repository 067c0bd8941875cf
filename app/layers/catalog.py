"""The layer catalogue: which tables are published as OGC collections, with which properties and rights.

Built-in layers describe the domain schema (admin units, villages, projects, facilities, households,
persons). Extra PostGIS tables registered in ``published_layer`` are introspected once at start-up.
Spatial and temporal extents are computed from the data and cached with the catalogue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Column, MetaData, Table, case, func, literal, null, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.types import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    Uuid,
)

from app.layers.crs import supported_uris
from app.models import codes
from app.models.codes import Role, allowed
from app.models.orm import (
    AdminStat,
    AdminUnit,
    Alert,
    AuditLog,
    Facility,
    H3Cell,
    Household,
    Person,
    Project,
    Region,
    RiskPrediction,
    RoadEdge,
    RoadNetwork,
    Survey,
    SurveyHousehold,
    TelecomAgg,
    TelecomOD,
    Village,
    VillageRisk,
)
from app.settings import SecuritySettings

log = logging.getLogger(__name__)

JsonSchema = dict[str, Any]



@dataclass(frozen=True)
class Prop:
    """A feature property: its SQL expression and its JSON Schema (for queryables and parsing)."""

    name: str
    expr: ColumnElement[Any]
    schema: JsonSchema
    description: str = ""
    filterable: bool = True


@dataclass(frozen=True)
class Temporal:
    start: ColumnElement[Any]
    end: ColumnElement[Any] | None
    end_exclusive: bool = True
    is_date: bool = True  # date columns compare as midnight UTC (the session time zone is UTC)


@dataclass(frozen=True)
class Extent:
    bbox: tuple[float, float, float, float] | None = None
    interval: tuple[str | None, str | None] | None = None
    count: int = 0
    regions: tuple[str, ...] = ()  # the regions the features belong to (their ``region`` property)


@dataclass(frozen=True)
class Editable:
    """How a collection is written (OGC API - Features Part 4). Properties map to the columns their
    expressions read; for villages, some live on the linked admin unit, created first with fixed values."""

    table: Table
    id_column: str
    geom_column: str
    geometry_types: tuple[str, ...]  # GeoJSON types accepted; () = any
    linked: Table | None = None
    linked_id: str = ""
    linked_fixed: tuple[tuple[str, Any], ...] = ()
    linked_copy: tuple[tuple[str, str], ...] = ()  # (linked column, main column) kept equal
    # (table, column, what): a delete is refused while rows reference the feature
    delete_guards: tuple[tuple[Table, str, str], ...] = ()
    # How the server names a feature created without an id: "sequence" (the region's latest prefix and the next
    # number, TL-F02000 → TL-F02001), "child" (the parent unit's code and the next number among its children) or
    # "hex64" (a random 64-hex pseudonym, the form of registry ids)
    id_scheme: str = "sequence"


@dataclass(frozen=True, eq=False)  # identity equality: layers key caches of compiled SQL
class Layer:
    id: str
    title: str
    description: str
    source: FromClause
    id_expr: ColumnElement[Any]
    id_schema: JsonSchema
    geom: ColumnElement[Any] | None
    geometry_type: str  # OGC/GeoJSON name: Point, MultiPolygon, … or Geometry
    props: tuple[Prop, ...]
    temporal: Temporal | None = None
    required_role: Role | None = None
    keywords: tuple[str, ...] = ()
    license: str | None = None
    attribution: str | None = None
    versioned: tuple[str, ...] = ()  # "schema.table" names whose table_version guards cached counts
    # For restricted point layers: the geometry shown to a role (e.g. displaced for analysts).
    geom_for_role: Callable[[Role | None], ColumnElement[Any]] | None = None
    # Maximum displacement of geom_for_role in metres (for bbox pre-filtering on the true geometry).
    displacement_m: float = 0.0
    extent: Extent = field(default_factory=Extent)
    editable: Editable | None = None
    # Restricted results of a job: only the job's owner (the key that ran it) and admins read them.
    owner: str | None = None
    # A JSON object column whose keys are published as properties of their own (attributes an import mapped
    # under ``properties:``): each key present in the data becomes a typed, queryable property.
    open_props: ColumnElement[Any] | None = None
    static_props: tuple[Prop, ...] | None = None  # the properties before the open ones were added
    listed: bool = True  # in /collections; results of executions are not unless published
    # where the extent is computed from when the source's joins add no rows and change no extent column (a scan of
    # millions of rows instead of millions of index lookups)
    extent_source: FromClause | None = None
    style: Mapping[str, Any] | None = None  # how it is drawn (app.processes.styles)
    context: Mapping[str, Any] | None = None  # a result's process, job, inputs summary and owner

    def prop(self, name: str) -> Prop | None:
        return self._props_by_name.get(name)

    @property
    def geom_nullable(self) -> bool:
        """Whether features may lack a geometry (a nullable geometry column)."""
        return isinstance(self.geom, Column) and bool(self.geom.nullable)

    @property
    def _props_by_name(self) -> Mapping[str, Prop]:
        return {p.name: p for p in self.props}

    def writable(self) -> dict[str, tuple[Prop, str, bool]]:
        """Property name → (prop, column, on the linked table) of what a Part 4 write may set; {} if not editable."""
        if self.editable is None:
            return {}
        out = {}
        for p in self.props:
            col = p.expr
            if isinstance(col, Column) and col.table is self.editable.table:
                out[p.name] = (p, col.name, False)
            elif isinstance(col, Column) and self.editable.linked is not None and col.table is self.editable.linked:
                out[p.name] = (p, col.name, True)
        return out

    def geometry(self, role: Role | None) -> ColumnElement[Any] | None:
        if self.geom_for_role is not None:
            return self.geom_for_role(role)
        return self.geom

    def readable_by(self, role: Role | None, actor: str | None = None) -> bool:
        return allowed(role, self.required_role) and not self.hidden_from(role, actor)

    def hidden_from(self, role: Role | None, actor: str | None) -> bool:
        """Another user's restricted job results: answered as if they did not exist."""
        return self.owner is not None and role != Role.admin and actor != self.owner


# --------------------------------------------------------------------------------------------- JSON schemas
def _s(kind: str, **kw: Any) -> JsonSchema:
    return {"type": kind, **kw}


STRING = _s("string")
INTEGER = _s("integer")
NUMBER = _s("number")
BOOLEAN = _s("boolean")
DATE = _s("string", format="date")
DATETIME = _s("string", format="date-time")


def enum_schema(enum: type[codes.StrEnum]) -> JsonSchema:
    return {"type": "string", "enum": [m.value for m in enum]}


def enum_array(enum: type[codes.StrEnum]) -> JsonSchema:
    return {"type": "array", "items": enum_schema(enum)}


def _p(name: str, expr: ColumnElement[Any], schema: JsonSchema, description: str = "", filterable: bool = True) -> Prop:
    return Prop(name, expr, schema, description, filterable and schema.get("type") != "object")


def _validity(model: Any) -> list[Prop]:
    c = model.__table__.c
    return [
        _p("valid_from", c.valid_from, DATE, "First day the record is valid"),
        _p("valid_to", c.valid_to, DATE, "Day the record stops being valid (exclusive); null = open"),
        _p("source", c.source, STRING, "Where the record comes from"),
    ]


# --------------------------------------------------------------------------------------------- built-in layers
def displaced_point(geom: ColumnElement[Any], key_of: ColumnElement[Any], secret: str) -> ColumnElement[Any]:
    """Move each point by 100–500 m in a direction, both derived from SHA-256(secret ‖ id).

    Deterministic (the same household always lands on the same spot, so averaging repeated requests
    reveals nothing) and computed in PostGIS, so no per-row Python runs.
    """
    h = func.sha256(func.convert_to(literal(secret, Text) + key_of, "UTF8"))
    b = [func.get_byte(h, i) for i in range(4)]
    dist = 100.0 + 400.0 * (b[0] * 256 + b[1]) / literal(65535.0, Float)
    azimuth = 2 * func.pi() * (b[2] * 256 + b[3]) / literal(65536.0, Float)
    return func.geometry(func.ST_Project(func.geography(geom), dist, azimuth))


# The township and county of a village (its admin unit's parent and grandparent), by name: several villages share a
# name (11 demo villages are called 泉村), so a person needs them to tell villages apart.
_TOWNSHIP = AdminUnit.__table__.alias("township")
_COUNTY = AdminUnit.__table__.alias("county")


def _village_source(v: Any, a: Any) -> Any:
    return (v.join(a, a.c.code == v.c.code).outerjoin(_TOWNSHIP, _TOWNSHIP.c.code == a.c.parent_code)
            .outerjoin(_COUNTY, _COUNTY.c.code == _TOWNSHIP.c.parent_code))


def _village_head(v: Any, a: Any) -> tuple[Prop, ...]:
    """The identifying properties every village layer starts with (its source is :func:`_village_source`)."""
    return (
        _p("region", v.c.region_id, STRING, "Region id"),
        _p("name", a.c.name, STRING, "Village name"),
        _p("township", _TOWNSHIP.c.name, STRING, "Township (name)"),
        _p("county", _COUNTY.c.name, STRING, "County (name)"),
        _p("township_code", a.c.parent_code, STRING, "Code of the township the village belongs to"),
        _p("county_code", _TOWNSHIP.c.parent_code, STRING, "Code of the county"),
        _p("is_poverty_village", v.c.is_poverty_village, BOOLEAN, "Registered poverty village (贫困村)"),
    )


def builtin_layers(security: SecuritySettings) -> list[Layer]:
    a, v, p, f, h, pe = (m.__table__ for m in (AdminUnit, Village, Project, Facility, Household, Person))
    layers: list[Layer] = []

    layers.append(Layer(
        id="admin-units",
        title="Administrative units",
        description="Administrative hierarchy of every region, from country (level 0) to village (level 5), "
        "with parent codes. Geometries may be approximate for demo regions (see each unit's properties).",
        source=a, id_expr=a.c.code, id_schema=STRING, geom=a.c.geom, geometry_type="MultiPolygon",
        props=(
            _p("region", a.c.region_id, STRING, "Region id"),
            _p("level", a.c.level, _s("integer", minimum=0, maximum=5), "0 country … 5 village"),
            _p("parent_code", a.c.parent_code, STRING, "Code of the parent unit"),
            _p("name", a.c.name, STRING, "Name"),
            _p("name_en", a.c.name_en, STRING, "Name in English"),
            *_validity(AdminUnit),
        ),
        open_props=a.c.properties,
        temporal=Temporal(a.c.valid_from, a.c.valid_to, True),
        keywords=("administrative boundaries", "admin units", "poverty"),
        versioned=("public.admin_unit",),
    ))

    layers.append(Layer(
        id="villages",
        title="Villages",
        description="Villages with the poverty-village form: population, labour, infrastructure, services.",
        source=_village_source(v, a),
        id_expr=v.c.code, id_schema=STRING, geom=v.c.geom_point, geometry_type="Point",
        props=(
            *_village_head(v, a),
            _p("households", v.c.households, INTEGER, "Households"),
            _p("population", v.c.population, INTEGER, "Registered population"),
            _p("labour_force", v.c.labour_force, INTEGER, "Labour force"),
            _p("migrant_workers", v.c.migrant_workers, INTEGER, "Migrant workers"),
            _p("arable_mu", v.c.arable_mu, NUMBER, "Arable land (mu)"),
            _p("km_to_township", v.c.km_to_township, NUMBER, "Distance to the township seat (km)"),
            _p("paved_road", v.c.paved_road, BOOLEAN, "Paved road to the village"),
            _p("bus_service", v.c.bus_service, BOOLEAN, "Bus service"),
            _p("grid_power", v.c.grid_power, BOOLEAN, "Grid power"),
            _p("broadband", v.c.broadband, BOOLEAN, "Broadband"),
            _p("clinic", v.c.clinic, BOOLEAN, "Village clinic"),
            _p("licensed_doctors", v.c.licensed_doctors, INTEGER, "Licensed doctors"),
            _p("collective_income", v.c.collective_income, NUMBER, "Village collective income"),
            _p("unsafe_water_households", v.c.unsafe_water_households, INTEGER, "Households without safe water"),
            *_validity(Village),
        ),
        temporal=Temporal(v.c.valid_from, v.c.valid_to, True),
        keywords=("villages", "poverty villages"),
        versioned=("public.village", "public.admin_unit"),
        editable=Editable(
            v, "code", "geom_point", ("Point",), linked=a, linked_id="code", linked_fixed=(("level", 5),),
            linked_copy=(("region_id", "region_id"), ("source", "source"), ("valid_from", "valid_from"),
                         ("valid_to", "valid_to")),
            delete_guards=((h, "village_code", "registered households"), (p, "admin_code", "projects"),
                           (SurveyHousehold.__table__, "area_code", "survey households"),
                           (f, "admin_code", "facilities"), (a, "parent_code", "administrative units")),
            id_scheme="child",
        ),
    ))

    layers.append(village_poverty_layer(v, a, h))
    layers.append(admin_poverty_layer(a))
    layers.append(village_risk_layer(v, a))

    layers.append(Layer(
        id="projects",
        title="Poverty-alleviation projects",
        description="Projects with type, status, budget, capacity (slots or jobs), service radius and the "
        "needs they address. Active between start_date and end_date.",
        source=p, id_expr=p.c.project_id, id_schema=STRING, geom=p.c.geom, geometry_type="Geometry",
        props=(
            _p("region", p.c.region_id, STRING, "Region id"),
            _p("name", p.c.name, STRING, "Name"),
            _p("type", p.c.type, enum_schema(codes.ProjectType), "Project type (code list: /docs/methodology#codes)"),
            _p("subtype", p.c.subtype, STRING, "Subtype"),
            _p("admin_code", p.c.admin_code, STRING, "Administrative unit"),
            _p("start_date", p.c.start_date, DATE, "Start"),
            _p("end_date", p.c.end_date, DATE, "End"),
            _p("status", p.c.status, enum_schema(codes.ProjectStatus), "Status"),
            _p("budget_total", p.c.budget_total, NUMBER, "Total budget (region currency)"),
            _p("budget_by_level", p.c.budget_by_level, _s("object"), "Budget by government level"),
            _p("capacity", p.c.capacity, INTEGER, "Beneficiary slots or jobs"),
            _p("service_radius_km", p.c.service_radius_km, NUMBER, "Service radius (km)"),
            _p("addresses_needs", p.c.addresses_needs, enum_array(codes.Need), "Needs the project addresses",
               filterable=False),
            *_validity(Project),
        ),
        temporal=Temporal(p.c.start_date, p.c.end_date, False),
        keywords=("projects", "poverty alleviation"),
        versioned=("public.project",),
        editable=Editable(p, "project_id", "geom", ()),
    ))

    layers.append(Layer(
        id="facilities",
        title="Facilities",
        description="Schools, clinics, hospitals, markets, banks, bus stops, water plants, township governments.",
        source=f, id_expr=f.c.fac_id, id_schema=STRING, geom=f.c.geom, geometry_type="Point",
        props=(
            _p("region", f.c.region_id, STRING, "Region id"),
            _p("class", f.c["class"], enum_schema(codes.FacilityClass), "Facility class"),
            _p("name", f.c.name, STRING, "Name"),
            _p("capacity", f.c.capacity, INTEGER, "Capacity (pupils, beds, …)"),
            _p("admin_code", f.c.admin_code, STRING, "Administrative unit"),
            *_validity(Facility),
        ),
        temporal=Temporal(f.c.valid_from, f.c.valid_to, True),
        keywords=("facilities", "services"),
        versioned=("public.facility",),
        editable=Editable(f, "fac_id", "geom", ("Point",)),
    ))

    layers.append(roads_layer())
    layers += telecom_layers()

    if security.jitter_key is None:  # not serving (e.g. exporting public layers): no household layer
        return layers
    secret = security.jitter_key.get_secret_value()
    displaced = displaced_point(h.c.geom, h.c.hh_id, secret)
    layers.append(Layer(
        id="households",
        title="Registered households (restricted)",
        description="Poor-household registry (pseudonymous). Restricted: analysts see each point displaced "
        "deterministically by 100–500 m; administrators see true positions.",
        source=h, id_expr=h.c.hh_id, id_schema=STRING, geom=h.c.geom, geometry_type="Point",
        props=(
            _p("region", h.c.region_id, STRING, "Region id"),
            _p("village_code", h.c.village_code, STRING, "Village"),
            _p("status", h.c.status, enum_schema(codes.HouseholdStatus), "Registry status"),
            _p("hh_type", h.c.hh_type, enum_schema(codes.HouseholdType), "Household type"),
            _p("id_standard", h.c.id_standard, enum_schema(codes.IdStandard), "Identification standard"),
            _p("main_cause", h.c.main_cause, enum_schema(codes.Cause), "Main cause of poverty"),
            _p("other_causes", h.c.other_causes, enum_array(codes.Cause), "Other causes", filterable=False),
            _p("year_identified", h.c.year_identified, INTEGER, "Year identified"),
            _p("year_exited", h.c.year_exited, INTEGER, "Year exited"),
            _p("size", h.c.size, INTEGER, "Members"),
            _p("net_income_pc", h.c.net_income_pc, NUMBER, "Net income per person per year"),
            _p("house_safety_grade", h.c.house_safety_grade, enum_schema(codes.SafetyGrade), "House safety grade"),
            _p("water_safe", h.c.water_safe, BOOLEAN, "Safe drinking water"),
            _p("water_difficulty", h.c.water_difficulty, BOOLEAN, "Difficult water access"),
            _p("toilet", h.c.toilet, enum_schema(codes.Toilet), "Toilet"),
            _p("cooking_fuel", h.c.cooking_fuel, enum_schema(codes.CookingFuel), "Cooking fuel"),
            _p("electricity", h.c.electricity, BOOLEAN, "Electricity"),
            _p("access_road", h.c.access_road, enum_schema(codes.AccessRoad), "Access road"),
            _p("arable_mu", h.c.arable_mu, NUMBER, "Arable land (mu)"),
            _p("coop_member", h.c.coop_member, BOOLEAN, "Cooperative member"),
            _p("microcredit", h.c.microcredit, BOOLEAN, "Has microcredit"),
            _p("reported_needs", h.c.reported_needs, enum_array(codes.Need), "Needs on the registry form",
               filterable=False),
            *_validity(Household),
        ),
        temporal=Temporal(h.c.valid_from, h.c.valid_to, True),
        required_role=Role.analyst,
        keywords=("households", "registry", "restricted"),
        versioned=("public.household",),
        editable=Editable(h, "hh_id", "geom", ("Point",), id_scheme="hex64"),
        geom_for_role=lambda role: h.c.geom if role == Role.admin else displaced,
        displacement_m=500.0,
    ))

    layers.append(household_records_layer(h, secret))
    layers.append(alerts_layer(secret))
    layers.append(risk_predictions_layer(secret))
    layers.append(survey_households_layer())

    layers.append(Layer(
        id="persons",
        title="Household members (restricted, administrators)",
        description="Members of registered households (pseudonymous): age, schooling, health, labour. "
        "No geometry. Administrators only.",
        source=pe, id_expr=pe.c.person_id, id_schema=STRING, geom=None, geometry_type="None",
        props=(
            _p("region", pe.c.region_id, STRING, "Region id"),
            _p("hh_id", pe.c.hh_id, STRING, "Household"),
            _p("relation", pe.c.relation, enum_schema(codes.Relation), "Relation to the head"),
            _p("sex", pe.c.sex, enum_schema(codes.Sex), "Sex"),
            _p("birth_year", pe.c.birth_year, INTEGER, "Birth year"),
            _p("ethnicity", pe.c.ethnicity, STRING, "Ethnicity"),
            _p("education", pe.c.education, enum_schema(codes.Education), "Education"),
            _p("in_school", pe.c.in_school, enum_schema(codes.InSchool), "School stage"),
            _p("health", pe.c.health, enum_schema(codes.Health), "Health"),
            _p("labour", pe.c.labour, enum_schema(codes.Labour), "Labour status"),
            _p("migrant_months", pe.c.migrant_months, INTEGER, "Months worked away"),
            _p("med_insured", pe.c.med_insured, BOOLEAN, "Medical insurance"),
            _p("pension_insured", pe.c.pension_insured, BOOLEAN, "Pension insurance"),
            _p("disability_grade", pe.c.disability_grade, INTEGER, "Disability grade"),
            *_validity(Person),
        ),
        temporal=Temporal(pe.c.valid_from, pe.c.valid_to, True),
        required_role=Role.admin,
        keywords=("persons", "registry", "restricted"),
        versioned=("public.person",),
    ))
    al = AuditLog.__table__
    layers.append(Layer(
        id="audit",
        title="Audit trail of edits (restricted, administrators)",
        description="Every create, replace, update and delete made through the API: who (API key id), when, "
        "the collection and feature, and the feature before and after. Append-only.",
        source=al, id_expr=al.c.audit_id, id_schema=INTEGER, geom=None, geometry_type="None",
        props=(
            _p("at", al.c.at, DATETIME, "When the change was committed"),
            _p("actor", al.c.actor, STRING, "Who made it (API key id)"),
            _p("role", al.c.role, {"type": "string", "enum": [r.value for r in Role]}, "Their role"),
            _p("action", al.c.action, {"type": "string", "enum": ["create", "replace", "update", "delete"]},
               "What was done"),
            _p("collection", al.c.collection, STRING, "Collection"),
            _p("feature_id", al.c.feature_id, STRING, "Feature"),
            _p("before", al.c.before, _s("object"), "The feature before (null for a create)"),
            _p("after", al.c.after, _s("object"), "The feature after (null for a delete)"),
        ),
        temporal=Temporal(al.c.at, al.c.at, False, is_date=False),
        required_role=Role.admin,
        keywords=("audit", "restricted"),
        versioned=("public.audit_log",),
    ))

    return layers


# docs/methodology.md#village-poverty: public layers show village aggregates of the registry; an aggregate of
# fewer than 5 households is suppressed (a count of 0 reveals nobody and is shown).
MIN_HOUSEHOLDS = 5
POOR_STATUSES = ("poor", "returned")


def registry_records(h: Any, cols: tuple[str, ...] | None = None, name: str = "registry") -> Any:
    """The registry's records of every year as one subquery: the current rows (``h``, the household table) and
    ``household_history`` (same columns, revision 0005), restricted to ``cols`` when given."""
    hist = Table("household_history", MetaData(), *(Column(c.name, c.type) for c in h.columns))
    names = cols or tuple(c.name for c in h.columns)
    return select(*(h.c[c] for c in names)).union_all(select(*(hist.c[c] for c in names))).subquery(name)


def village_poverty_layer(v: Any, a: Any, h: Any) -> Layer:
    """Public poverty aggregates of the registry per village (the Stage 1 demand layer), as of the snapshot the
    registry processes read by default: the region's default year when the registry has it, else the latest."""
    reg = registry_records(h, ("region_id", "village_code", "status", "size", "valid_from", "valid_to"))
    r = Region.__table__
    poor = reg.c.status.in_(POOR_STATUSES)
    in_default = func.extract("year", reg.c.valid_from) == r.c.default_year
    latest = (select(reg.c.region_id, func.coalesce(func.max(reg.c.valid_from).filter(in_default),
                                                    func.max(reg.c.valid_from)).label("at"))
              .select_from(reg.join(r, r.c.region_id == reg.c.region_id))
              .group_by(reg.c.region_id).subquery("latest"))
    agg = (select(reg.c.village_code.label("code"), func.count().label("registered"),
                  func.count().filter(poor).label("poor_hh"),
                  func.coalesce(func.sum(reg.c.size).filter(poor), 0).label("poor_pp"))
           .select_from(reg.join(latest, latest.c.region_id == reg.c.region_id))
           .where(reg.c.valid_from <= latest.c.at, (reg.c.valid_to.is_(None)) | (reg.c.valid_to > latest.c.at))
           .group_by(reg.c.village_code).subquery("village_registry"))
    poor_hh = func.coalesce(agg.c.poor_hh, 0)
    registered = func.coalesce(agg.c.registered, 0)
    small = (poor_hh > 0) & (poor_hh < MIN_HOUSEHOLDS)
    # the registered households are withheld when they are 1-4, and when the households that are not poor
    # (registered − poor: exited or monitored) are: published beside the poor, they would give those back
    small_reg = ((registered > 0) & (registered < MIN_HOUSEHOLDS)) | (
        (registered - poor_hh > 0) & (registered - poor_hh < MIN_HOUSEHOLDS))

    def unless(cond: Any, value: Any) -> Any:
        return case((cond, null()), else_=value)

    poor_pp = unless(small, func.coalesce(agg.c.poor_pp, 0))
    return Layer(
        id="village-poverty",
        title="Village poverty (registry aggregates)",
        description="Per village, from the poor-household registry as of the region's default year (else its "
        "latest snapshot): registered "
        "households, poor households (status poor or returned), poor persons and the poverty rate "
        "(poor persons / population). "
        f"Counts of 1–{MIN_HOUSEHOLDS - 1} households are suppressed (null, suppressed = true), and so are "
        f"registered households whose households that are not poor number 1–{MIN_HOUSEHOLDS - 1}. The demand "
        "layer of the Stage 1 processes (select the villages whose poor are published with "
        "filter=poor_persons IS NOT NULL).",
        source=_village_source(v, a).outerjoin(agg, agg.c.code == v.c.code),
        id_expr=v.c.code, id_schema=STRING, geom=v.c.geom_point, geometry_type="Point",
        props=(
            *_village_head(v, a),
            _p("population", v.c.population, INTEGER, "Registered population (village form)"),
            _p("registered_households", unless(small_reg, registered), INTEGER,
               "Households in the current registry"),
            _p("poor_households", unless(small, poor_hh), INTEGER, "Households with status poor or returned"),
            _p("poor_persons", poor_pp, INTEGER, "Members of those households"),
            _p("poverty_rate", unless(small, func.cast(func.coalesce(agg.c.poor_pp, 0), Double) / func.nullif(
                func.cast(v.c.population, Double), 0)), NUMBER, "Poor persons / population"),
            _p("suppressed", small | small_reg, BOOLEAN, f"A count covers fewer than {MIN_HOUSEHOLDS} households"),
        ),
        keywords=("villages", "poverty", "registry aggregates", "Stage 1"),
        versioned=("public.village", "public.admin_unit", "public.household", "public.household_history",
                   "public.region"),
    )


PERSON_HISTORY = Table("person_history", MetaData(), *(Column(c.name, c.type) for c in Person.__table__.columns))
ABLE_TO_WORK = ("ordinary", "skilled")


def member_of_on(t: Any, hh_id: Any, at: Any) -> tuple[Any, ...]:
    """Conditions on member rows of ``t`` (``person``, ``person_history`` or a union of both): a member of the
    household ``hh_id`` as registered on day ``at`` (the row valid that day)."""
    return t.c.hh_id == hh_id, t.c.valid_from <= at, (t.c.valid_to.is_(None)) | (t.c.valid_to > at)


def labour_members(hh_id: Any, at: Any) -> Any:
    """How many members of the household ``hh_id`` were able to work (ordinary or skilled labour) on day ``at``:
    the member records (current and ``person_history``, revision 0005) valid that day. A correlated count per
    record, by the index on each table's hh_id."""
    def valid(t: Any) -> Any:
        return select(func.count()).select_from(t).where(
            *member_of_on(t, hh_id, at), t.c.labour.in_(ABLE_TO_WORK)).scalar_subquery()

    return valid(Person.__table__) + valid(PERSON_HISTORY)


def household_records_layer(h: Any, secret: str) -> Layer:
    """The registry over time (restricted): one feature per household and registry year, from the current rows and
    ``household_history``, with the previous year's income beside each record (the inputs of monitoring rules)."""
    reg = registry_records(h, name="records")
    prev = reg.alias("previous")
    # the record that ends where this one begins: an index lookup per row (household_history's key is
    # (hh_id, valid_from)), where a window over the whole registry would defeat every filter
    rg = Region.__table__
    src = reg.outerjoin(prev, (prev.c.hh_id == reg.c.hh_id) & (prev.c.valid_to == reg.c.valid_from)).join(
        rg, rg.c.region_id == reg.c.region_id)
    year = func.cast(func.extract("year", reg.c.valid_from), Integer)
    change = func.cast(reg.c.net_income_pc, Double) / func.nullif(func.cast(prev.c.net_income_pc, Double), 0) - 1
    displaced = displaced_point(reg.c.geom, reg.c.hh_id, secret)
    rigid = (func.coalesce(reg.c.expense_medical, 0) + func.coalesce(reg.c.expense_education, 0)
             + func.coalesce(reg.c.loss_disaster, 0))
    rigid_share = func.cast(rigid, Double) / func.nullif(func.cast(reg.c.net_income_pc * reg.c.size, Double), 0)
    labour_now = labour_members(reg.c.hh_id, reg.c.valid_from)
    # at the previous record's first day; none without a previous record (as its income)
    labour_before = case((prev.c.hh_id.is_(None), null()), else_=labour_members(reg.c.hh_id, prev.c.valid_from))
    return Layer(
        id="household-records",
        title="Registry records by year (restricted)",
        description="The poor-household registry over time (pseudonymous): one record per household and registry "
        "year, valid for that year, with the previous record's income and the change. Restricted like households: "
        "analysts see each point displaced exactly as in the households collection; administrators see true "
        "positions. Filter a year with datetime (e.g. datetime=2020-06-30).",
        source=src, id_expr=reg.c.hh_id + "-" + func.cast(year, Text), id_schema=STRING, geom=reg.c.geom,
        geometry_type="Point",
        props=(
            _p("hh_id", reg.c.hh_id, STRING, "Household (pseudonym)"),
            _p("year", year, INTEGER, "Registry year"),
            _p("region", reg.c.region_id, STRING, "Region id"),
            _p("village_code", reg.c.village_code, STRING, "Village"),
            _p("status", reg.c.status, enum_schema(codes.HouseholdStatus), "Registry status in the year"),
            _p("hh_type", reg.c.hh_type, enum_schema(codes.HouseholdType), "Household type"),
            _p("main_cause", reg.c.main_cause, enum_schema(codes.Cause), "Main cause of poverty"),
            _p("year_identified", reg.c.year_identified, INTEGER, "Year identified"),
            _p("year_exited", reg.c.year_exited, INTEGER, "Year exited"),
            _p("size", reg.c.size, INTEGER, "Members"),
            _p("income_wage", reg.c.income_wage, NUMBER, "Wage income (per year)"),
            _p("income_business", reg.c.income_business, NUMBER, "Business income, gross (per year)"),
            _p("income_property", reg.c.income_property, NUMBER, "Property income (per year)"),
            _p("income_transfer", reg.c.income_transfer, NUMBER, "Transfer income (per year)"),
            _p("expense_production", reg.c.expense_production, NUMBER, "Production expense (per year)"),
            _p("net_income_pc", reg.c.net_income_pc, NUMBER, "Net income per person per year"),
            _p("previous_net_income_pc", prev.c.net_income_pc, NUMBER,
               "Net income per person in the household's previous record"),
            _p("income_change", change, NUMBER, "Relative change of net income per person since the previous "
               "record (−0.3 = fell by 30 %)"),
            _p("labour_members", labour_now, INTEGER, "Members able to work (ordinary or skilled labour) on the "
               "record's first day, from the member records valid then"),
            _p("previous_labour_members", labour_before, INTEGER, "Members able to work on the first day of the "
               "household's previous record"),
            _p("expense_medical", reg.c.expense_medical, NUMBER, "Medical costs paid out of pocket (per year)"),
            _p("expense_education", reg.c.expense_education, NUMBER, "Schooling costs (per year)"),
            _p("loss_disaster", reg.c.loss_disaster, NUMBER, "Losses from disasters (per year)"),
            _p("rigid_expense_share", rigid_share, NUMBER, "Rigid expenditure (medical, schooling, disaster losses) "
               "over the household's net income"),
            _p("poverty_line", func.cast(rg.c.poverty_line, Double), NUMBER,
               "The region's poverty line (net income per person per year)"),
            _p("monitoring_line", func.cast(rg.c.poverty_line * rg.c.monitoring_line_factor, Double), NUMBER,
               "The region's monitoring line: the poverty line times its monitoring factor (1.5 by default)"),
            _p("house_safety_grade", reg.c.house_safety_grade, enum_schema(codes.SafetyGrade), "House safety grade"),
            _p("water_safe", reg.c.water_safe, BOOLEAN, "Safe drinking water"),
            _p("water_difficulty", reg.c.water_difficulty, BOOLEAN, "Difficult water access"),
            _p("arable_mu", reg.c.arable_mu, NUMBER, "Arable land (mu)"),
            _p("irrigated_mu", reg.c.irrigated_mu, NUMBER, "Irrigated land (mu)"),
            _p("coop_member", reg.c.coop_member, BOOLEAN, "Cooperative member"),
            _p("microcredit", reg.c.microcredit, BOOLEAN, "Has obtained microcredit"),
            _p("food_insecure", reg.c.food_insecure, BOOLEAN, "Food insecure"),
            _p("family_doctor", reg.c.family_doctor, BOOLEAN, "Contracted family doctor"),
            _p("reported_needs", reg.c.reported_needs, enum_array(codes.Need), "Needs on the registry form",
               filterable=False),
            _p("valid_from", reg.c.valid_from, DATE, "First day the record is valid"),
            _p("valid_to", reg.c.valid_to, DATE, "Day the record stops being valid (exclusive); null = open"),
            _p("source", reg.c.source, STRING, "Where the record comes from"),
        ),
        temporal=Temporal(reg.c.valid_from, reg.c.valid_to, True),
        required_role=Role.analyst,
        keywords=("households", "registry", "history", "monitoring", "restricted"),
        versioned=("public.household", "public.household_history", "public.region"),
        geom_for_role=lambda role: reg.c.geom if role == Role.admin else displaced,
        displacement_m=500.0,
        extent_source=reg,  # the joins find at most one previous record and the region of each
    )


def alerts_layer(secret: str) -> Layer:
    """What dynamic monitoring found (restricted): one alert per household and year, written by a screening
    (``tpa monitoring run``), moved through its lifecycle by administrators with Part 4 edits (audited)."""
    al = Alert.__table__
    displaced = displaced_point(al.c.geom, al.c.hh_id, secret)
    categories = {"type": "array", "items": enum_schema(codes.MonitoringCategory)}
    return Layer(
        id="alerts",
        title="Monitoring alerts (restricted)",
        description="Households that the region's monitoring rules flagged in a registry year "
        "(docs/methodology.md#monitoring): the categories (unstable after exit, at the edge of poverty, in sudden "
        "difficulty), the rules that fired and the values that triggered them. An alert moves new → verified → "
        "assisted → closed, or to dismissed from new or verified: administrators change status and note with "
        "a PATCH (JSON merge patch), recorded in the audit trail. Points displaced for analysts as in households.",
        source=al, id_expr=al.c.alert_id, id_schema=STRING, geom=al.c.geom, geometry_type="Point",
        props=(
            _p("region", al.c.region_id, STRING, "Region id"),
            _p("hh_id", al.c.hh_id, STRING, "Household (pseudonym)"),
            _p("year", al.c.year, INTEGER, "Registry year screened"),
            _p("village_code", al.c.village_code, STRING, "Village"),
            _p("categories", al.c.categories, categories, "Monitoring categories of the rules that fired",
               filterable=False),
            _p("rules", al.c.rules, {"type": "array", "items": STRING}, "Rules that fired", filterable=False),
            _p("trigger_values", al.c.trigger_values, _s("object"), "The values the fired rules read"),
            _p("status", al.c.status, enum_schema(codes.AlertStatus), "Where the alert stands"),
            _p("note", al.c.note, STRING, "The cadre's note"),
            _p("screened_at", al.c.screened_at, DATETIME, "When the screening last found it"),
            _p("updated_at", al.c.updated_at, DATETIME, "Last change"),
        ),
        temporal=Temporal(al.c.screened_at, al.c.screened_at, False, is_date=False),
        required_role=Role.analyst,
        keywords=("monitoring", "alerts", "return to poverty", "restricted"),
        versioned=("public.alert",),
        editable=Editable(al, "alert_id", "geom", ("Point",)),
        geom_for_role=lambda role: al.c.geom if role == Role.admin else displaced,
        displacement_m=500.0,
    )


def risk_predictions_layer(secret: str) -> Layer:
    """Each household's probability of being in poverty the year after a scored record (restricted), from the
    return-risk models of ``risk_model``, with the factors that raised it most."""
    rp = RiskPrediction.__table__
    displaced = displaced_point(rp.c.geom, rp.c.hh_id, secret)
    return Layer(
        id="risk-predictions",
        title="Return-risk predictions (restricted)",
        description="Per household out of poverty (exited or monitored) in a scored registry year: the probability "
        "that it is in poverty the next year (registered poor or returned, or net income per person below the "
        "poverty line) from the region's gradient-boosted return-risk model (docs/methodology.md#return-risk), "
        "whether it is at high risk (probability at or above the model's threshold), the monitoring rules that "
        "fired on the record, and the factors that raised the probability most with their values and "
        "contributions to the log-odds. Every model stored is here; filter by model_id. Points displaced for "
        "analysts as in households.",
        source=rp, id_expr=rp.c.model_id + ":" + rp.c.hh_id, id_schema=STRING, geom=rp.c.geom,
        geometry_type="Point",
        props=(
            _p("model_id", rp.c.model_id, STRING, "The model (see the results of its return-risk job)"),
            _p("region", rp.c.region_id, STRING, "Region id"),
            _p("hh_id", rp.c.hh_id, STRING, "Household (pseudonym)"),
            _p("year", rp.c.year, INTEGER, "Registry year scored (the prediction is for the next year)"),
            _p("village_code", rp.c.village_code, STRING, "Village"),
            _p("probability", rp.c.probability, NUMBER, "Probability of being in poverty the next year"),
            _p("high_risk", rp.c.high_risk, BOOLEAN, "Probability at or above the model's threshold"),
            _p("rules_fired", rp.c.rules_fired, INTEGER, "Monitoring rules that fired on the record"),
            _p("factors", rp.c.factors, _s("array"), "The factors that raised the probability most: feature, "
               "value, contribution to the log-odds", filterable=False),
        ),
        required_role=Role.analyst,
        keywords=("monitoring", "return to poverty", "early warning", "restricted"),
        versioned=("public.risk_prediction",),
        geom_for_role=lambda role: rp.c.geom if role == Role.admin else displaced,
        displacement_m=500.0,
    )


def survey_households_layer() -> Layer:
    """The responding households of each household survey (restricted: survey microdata are personal data), the
    sample small-area estimation starts from (docs/methodology.md#small-area-estimation)."""
    sh, sv = SurveyHousehold.__table__, Survey.__table__
    return Layer(
        id="survey-households",
        title="Survey households (restricted)",
        description="The households that answered each household survey (tpa import survey): the area (village) "
        "they live in, the stratum and primary sampling unit of the design, the design weight, the household "
        "size, income per person and further covariates. The input of small-area estimation; filter by survey.",
        source=sh.join(sv, sv.c.survey_id == sh.c.survey_id),
        id_expr=sh.c.survey_id + ":" + sh.c.hh_id, id_schema=STRING, geom=None, geometry_type="None",
        props=(
            _p("survey", sh.c.survey_id, STRING, "Survey id"),
            _p("region", sv.c.region_id, STRING, "Region id"),
            _p("year", sv.c.year, INTEGER, "Survey year"),
            _p("hh_id", sh.c.hh_id, STRING, "Household (the survey's own identifier)"),
            _p("area_code", sh.c.area_code, STRING, "Area (village) of the household"),
            _p("stratum", sh.c.stratum, STRING, "Stratum of the design"),
            _p("psu", sh.c.psu, STRING, "Primary sampling unit"),
            _p("weight", sh.c.weight, NUMBER, "Design weight (households represented)"),
            _p("size", sh.c.size, INTEGER, "Members"),
            _p("income_pc", sh.c.income_pc, NUMBER, "Net income per person per year (region currency)"),
        ),
        open_props=sh.c.properties,
        required_role=Role.analyst,
        keywords=("survey", "small area estimation", "restricted"),
        versioned=("public.survey_household", "public.survey"),
    )


def village_risk_layer(v: Any, a: Any) -> Layer:
    """Public village figures of each region's latest return-risk model, suppressed when they are written."""
    vr = VillageRisk.__table__
    return Layer(
        id="village-risk",
        title="Return risk by village",
        description="Per village, from the region's latest return-risk model (docs/methodology.md#return-risk): "
        "the households out of poverty at high risk of being in poverty the next year and their mean probability. "
        f"No figure for a village with fewer than {MIN_HOUSEHOLDS} scored households, and no count of 1–"
        f"{MIN_HOUSEHOLDS - 1} high-risk households or leaving 1–{MIN_HOUSEHOLDS - 1} not at high risk "
        "(null, suppressed = true).",
        source=_village_source(v, a).join(vr, vr.c.village_code == v.c.code),
        id_expr=v.c.code, id_schema=STRING, geom=v.c.geom_point, geometry_type="Point",
        props=(
            *_village_head(v, a),
            _p("year", vr.c.year, INTEGER, "Registry year scored (the risk is for the next year)"),
            _p("model_id", vr.c.model_id, STRING, "The model"),
            _p("high_risk", vr.c.high_risk, INTEGER, "Households at high risk of being in poverty the next year"),
            _p("mean_probability", vr.c.mean_probability, NUMBER, "Mean probability of the scored households"),
            _p("suppressed", vr.c.suppressed, BOOLEAN, "A figure is withheld to protect small groups"),
        ),
        keywords=("villages", "monitoring", "return to poverty", "early warning"),
        versioned=("public.village_risk", "public.village", "public.admin_unit"),
    )


def roads_layer() -> Layer:
    """The current road network of each region (docs/methodology.md#road-networks): the edges travel times are
    computed on, with their speeds; earlier versions stay in the database for the results that used them."""
    e, n = RoadEdge.__table__, RoadNetwork.__table__
    minutes = _s("number", minimum=0)
    return Layer(
        id="roads",
        title="Road network",
        description="The edges of each region's current road network, as travel times are computed on them: road "
        "class, one-way (1 along the line, -1 against it, 0 both ways), surface, motor and walking speeds (km/h; "
        "null: closed to that mode) and the minutes each takes. A result computed on the network names its "
        "version (network_id).",
        source=e.join(n, (n.c.network_id == e.c.network_id) & n.c.current),
        id_expr=func.concat(e.c.network_id, "-", e.c.edge_id), id_schema=STRING, geom=e.c.geom,
        geometry_type="LineString",
        props=(
            _p("region", n.c.region_id, STRING, "Region id"),
            _p("network_id", e.c.network_id, INTEGER, "The network (version) the edge belongs to"),
            _p("version", n.c.version, INTEGER, "Version of the region's network"),
            _p("edge_id", e.c.edge_id, INTEGER, "Edge id within the network"),
            _p("source", e.c.source, INTEGER, "Vertex at the start of the line"),
            _p("target", e.c.target, INTEGER, "Vertex at the end of the line"),
            _p("road_class", e.c.road_class, STRING, "Road class (OpenStreetMap highway values)"),
            _p("name", e.c.name, STRING, "Name"),
            _p("oneway", e.c.oneway, {"type": "integer", "enum": [-1, 0, 1]}, "One-way: 1 along the line, -1 "
               "against it, 0 both ways (motor traffic; walking goes both ways)"),
            _p("surface", e.c.surface, STRING, "Surface"),
            _p("length_m", e.c.length_m, NUMBER, "Length (m, geodesic)"),
            _p("motor_kmh", e.c.motor_kmh, NUMBER, "Motor speed (km/h); null: closed to motor traffic"),
            _p("walk_kmh", e.c.walk_kmh, NUMBER, "Walking speed (km/h); null: closed to pedestrians"),
            _p("motor_minutes", e.c.length_m * 0.06 / e.c.motor_kmh, minutes, "Minutes by motor vehicle"),
            _p("walk_minutes", e.c.length_m * 0.06 / e.c.walk_kmh, minutes, "Minutes on foot"),
        ),
        keywords=("roads", "network", "travel time", "accessibility"),
        versioned=("public.road_edge", "public.road_network"),
    )


def admin_poverty_layer(a: Any) -> Layer:
    """Public registry figures per administrative unit and year, villages included (table ``admin_stat``)."""
    s = AdminStat.__table__
    count = _s("integer", minimum=0)
    return Layer(
        id="admin-poverty",
        title="Poverty by administrative unit and year (registry aggregates)",
        description="Per administrative unit (region, county, township, village) and registry year, from the "
        "poor-household registry as of the year's last snapshot: registered, poor (poor or returned), exited and "
        "monitored (at risk of returning) households, poor persons, households and persons reached by projects, "
        "the population of the village forms and the poverty rate; the households that entered, exited and "
        "returned since the previous year's snapshot, and quartiles of income over the poverty line. Figures "
        f"that would reveal fewer than {MIN_HOUSEHOLDS} households are withheld (null, suppressed = true): "
        f"village figures of 1–{MIN_HOUSEHOLDS - 1} households, and any total from which such a figure could be "
        "recovered by subtracting published figures, within a year or across years (secondary suppression). "
        "Villages carry the stocks the village-poverty layer publishes and the flows.",
        source=s.join(a, a.c.code == s.c.admin_code),
        id_expr=s.c.admin_code + "-" + func.cast(s.c.year, Text), id_schema=STRING, geom=a.c.geom,
        geometry_type="MultiPolygon",
        props=(
            _p("region", s.c.region_id, STRING, "Region id"),
            _p("admin_code", s.c.admin_code, STRING, "Code of the administrative unit"),
            _p("name", a.c.name, STRING, "Name"),
            _p("name_en", a.c.name_en, STRING, "Name in English"),
            _p("level", s.c.level, _s("integer", minimum=0, maximum=5), "0 country … 5 village"),
            _p("parent_code", a.c.parent_code, STRING, "Code of the parent unit"),
            _p("year", s.c.year, INTEGER, "Registry year"),
            _p("snapshot", s.c.snapshot, DATE, "Date of the registry snapshot the figures count"),
            _p("villages", s.c.villages, count, "Villages in the unit"),
            _p("population", s.c.population, count, "Population of the village forms"),
            _p("registered_households", s.c.registered_households, count, "Households in the registry"),
            _p("poor_households", s.c.poor_households, count, "Households with status poor or returned"),
            _p("poor_persons", s.c.poor_persons, count, "Members of those households"),
            _p("exited_households", s.c.exited_households, count, "Households that exited poverty"),
            _p("monitored_households", s.c.monitored_households, count,
               "Households monitored as at risk of (returning to) poverty"),
            _p("reached_households", s.c.reached_households, count,
               "Registered households that benefited from a project up to the year"),
            _p("reached_persons", s.c.reached_persons, count, "Members of those households"),
            _p("poverty_rate", s.c.poverty_rate, NUMBER, "Poor persons / population"),
            _p("entered_households", s.c.entered_households, count,
               "Households that entered the registry since the previous year's snapshot"),
            _p("exits", s.c.exits, count, "Households that exited poverty since the previous year's snapshot "
               "(poor or returned then, exited or monitored now)"),
            _p("returns", s.c.returns, count, "Households that returned to poverty since the previous year's "
               "snapshot (exited or monitored then, poor or returned now)"),
            _p("income_p25", s.c.income_p25, NUMBER, "First quartile of registered households' net income per "
               "person, over the region's poverty line (groups of 20 households or more)"),
            _p("income_median", s.c.income_median, NUMBER, "Median of registered households' net income per "
               "person, over the region's poverty line"),
            _p("income_p75", s.c.income_p75, NUMBER, "Third quartile of registered households' net income per "
               "person, over the region's poverty line"),
            _p("suppressed", s.c.suppressed, BOOLEAN, "Figures are withheld (small groups)"),
        ),
        temporal=Temporal(func.make_date(s.c.year, 1, 1), func.make_date(s.c.year + 1, 1, 1), True),
        keywords=("administrative units", "poverty", "registry aggregates", "overview"),
        versioned=("public.admin_stat", "public.admin_unit"),
    )


def telecom_layers() -> list[Layer]:
    """Released telecom aggregates (only aggregates ever enter the database; docs/methodology.md#telecom-suppression).

    Cells are H3 hexagons (``h3_cell``); rows rolled up to a parent cell carry its coarser ``h3_res``. Counts
    are published only for more than k devices; admin-unit rows that would reveal a small group carry
    ``n_devices = null`` and ``suppressed = true``.
    """
    ta, hc, au = TelecomAgg.__table__, H3Cell.__table__, AdminUnit.__table__
    tod = TelecomOD.__table__
    month = func.to_char(func.lower(ta.c.period), "YYYY-MM")

    def cells(where: Any, name: str) -> Any:
        return (select(ta.c.id, ta.c.region_id, ta.c.unit_id, ta.c.h3_res, ta.c.hour, ta.c.indicator, ta.c.value,
                       ta.c.n_subscribers, ta.c.suppressed, month.label("period"),
                       func.lower(ta.c.period).label("p0"), func.upper(ta.c.period).label("p1"), hc.c.geom)
                .select_from(ta.join(hc, hc.c.h3_index == ta.c.unit_id)).where(where).subquery(name))

    def common(sq: Any) -> tuple[Prop, ...]:
        return (_p("region", sq.c.region_id, STRING, "Region id"),
                _p("cell", sq.c.unit_id, STRING, "H3 cell (string form)"),
                _p("h3_res", sq.c.h3_res, INTEGER, "H3 resolution (coarser when suppressed cells were rolled up)"),
                _p("period", sq.c.period, STRING, "Month (YYYY-MM)"))

    pr = cells((ta.c.indicator == "presence") & (ta.c.unit_type == "h3"), "telecom_presence")
    rs = cells((ta.c.indicator == "residents") & (ta.c.unit_type == "h3"), "telecom_residents")
    ci = cells((ta.c.indicator != "presence") & (ta.c.indicator != "residents") & (ta.c.unit_type == "h3"),
               "telecom_cell_indicators")
    out = [
        Layer(id="telecom-presence", title="Telecom: presence by hour",
              description="Distinct devices per H3 cell and local hour of day over a month (more than k devices "
              "only; smaller groups rolled up to parent cells or withheld).",
              source=pr, id_expr=pr.c.id, id_schema=INTEGER, geom=pr.c.geom, geometry_type="Polygon",
              props=(*common(pr), _p("hour", pr.c.hour, _s("integer", minimum=0, maximum=23), "Local hour of day"),
                     _p("n_devices", pr.c.value, INTEGER, "Distinct devices (noised when the release used ε)")),
              temporal=Temporal(pr.c.p0, pr.c.p1, True), keywords=("telecom", "presence", "mobile phone data"),
              versioned=("public.telecom_agg",)),
        Layer(id="telecom-residents", title="Telecom: resident devices",
              description="Devices whose home (modal night-time cell over at least the minimum number of nights) "
              "lies in the H3 cell, per month.",
              source=rs, id_expr=rs.c.id, id_schema=INTEGER, geom=rs.c.geom, geometry_type="Polygon",
              props=(*common(rs), _p("n_devices", rs.c.value, INTEGER, "Resident devices")),
              temporal=Temporal(rs.c.p0, rs.c.p1, True), keywords=("telecom", "residents", "home location"),
              versioned=("public.telecom_agg",)),
        Layer(id="telecom-cell-indicators", title="Telecom: indicators per home cell",
              description="Statistics over the resident devices of each H3 cell: median radius of gyration, "
              "service visits and distance to the nearest facility cell by class.",
              source=ci, id_expr=ci.c.id, id_schema=INTEGER, geom=ci.c.geom, geometry_type="Polygon",
              props=(*common(ci), _p("indicator", ci.c.indicator, STRING, "Indicator code (indicator_def)"),
                     _p("value", ci.c.value, NUMBER, "Value"),
                     _p("n_devices", ci.c.n_subscribers, INTEGER, "Devices the value is computed from")),
              temporal=Temporal(ci.c.p0, ci.c.p1, True), keywords=("telecom", "indicators"),
              versioned=("public.telecom_agg",)),
    ]
    ad = (select(ta.c.id, ta.c.region_id, ta.c.unit_id, ta.c.indicator, ta.c.value, ta.c.n_subscribers,
                 ta.c.suppressed, month.label("period"), func.lower(ta.c.period).label("p0"),
                 func.upper(ta.c.period).label("p1"), au.c.name, au.c.level, au.c.geom)
          .select_from(ta.join(au, au.c.code == ta.c.unit_id)).where(ta.c.unit_type == "admin")
          .subquery("telecom_admin_indicators"))
    out.append(Layer(
        id="telecom-admin-indicators", title="Telecom: indicators per administrative unit",
        description="Resident devices and out-migration per administrative unit, computed from the device-level "
        "table inside the operator (never by summing published cells). Units whose figure would let a group of "
        "k or fewer devices be recovered by subtraction carry n_devices = null and suppressed = true.",
        source=ad, id_expr=ad.c.id, id_schema=INTEGER, geom=ad.c.geom, geometry_type="MultiPolygon",
        props=(_p("region", ad.c.region_id, STRING, "Region id"), _p("admin_code", ad.c.unit_id, STRING, "Unit"),
               _p("name", ad.c.name, STRING, "Unit name"), _p("level", ad.c.level, INTEGER, "Admin level"),
               _p("indicator", ad.c.indicator, STRING, "Indicator code"), _p("value", ad.c.value, NUMBER, "Value"),
               _p("n_devices", ad.c.n_subscribers, INTEGER, "Devices"),
               _p("suppressed", ad.c.suppressed, BOOLEAN, "Withheld by the minimum-count rule"),
               _p("period", ad.c.period, STRING, "Month (YYYY-MM)")),
        temporal=Temporal(ad.c.p0, ad.c.p1, True), keywords=("telecom", "admin units"),
        versioned=("public.telecom_agg", "public.admin_unit")))
    o, d = H3Cell.__table__.alias("o"), H3Cell.__table__.alias("d")
    od = (select(tod.c.id, tod.c.region_id, tod.c.origin_unit, tod.c.dest_unit, tod.c.h3_res, tod.c.count,
                 func.to_char(func.lower(tod.c.period), "YYYY-MM").label("period"),
                 func.lower(tod.c.period).label("p0"), func.upper(tod.c.period).label("p1"),
                 func.ST_MakeLine(func.ST_Centroid(o.c.geom), func.ST_Centroid(d.c.geom)).label("geom"))
          .select_from(tod.join(o, o.c.h3_index == tod.c.origin_unit).join(d, d.c.h3_index == tod.c.dest_unit))
          .where((tod.c.unit_type == "h3") & tod.c.suppressed.is_(False)).subquery("telecom_od_lines"))
    out.append(Layer(
        id="telecom-od", title="Telecom: commuting flows",
        description="Devices per (home cell, day cell) pair, as lines between cell centres; equal cells give "
        "zero-length lines. Pairs of k or fewer devices are rolled up to parent cells or withheld.",
        source=od, id_expr=od.c.id, id_schema=INTEGER, geom=od.c.geom, geometry_type="LineString",
        props=(_p("region", od.c.region_id, STRING, "Region id"), _p("origin_cell", od.c.origin_unit, STRING,
                                                                      "Home cell (H3)"),
               _p("dest_cell", od.c.dest_unit, STRING, "Day cell (H3)"), _p("h3_res", od.c.h3_res, INTEGER,
                                                                            "H3 resolution of both ends"),
               _p("n_devices", od.c.count, INTEGER, "Devices"), _p("period", od.c.period, STRING, "Month")),
        temporal=Temporal(od.c.p0, od.c.p1, True), keywords=("telecom", "commuting", "origin-destination"),
        versioned=("public.telecom_od",)))
    ao, ad_ = AdminUnit.__table__.alias("ao"), AdminUnit.__table__.alias("ad")
    aod = (select(tod.c.id, tod.c.region_id, tod.c.origin_unit, ao.c.name.label("origin_name"), tod.c.dest_unit,
                  ad_.c.name.label("dest_name"), ao.c.level, tod.c.count,
                  func.to_char(func.lower(tod.c.period), "YYYY-MM").label("period"),
                  func.lower(tod.c.period).label("p0"), func.upper(tod.c.period).label("p1"),
                  func.ST_MakeLine(func.ST_PointOnSurface(ao.c.geom), func.ST_PointOnSurface(ad_.c.geom))
                  .label("geom"))
           .select_from(tod.join(ao, ao.c.code == tod.c.origin_unit).join(ad_, ad_.c.code == tod.c.dest_unit))
           .where((tod.c.unit_type == "admin") & tod.c.suppressed.is_(False)).subquery("telecom_admin_od_lines"))
    out.append(Layer(
        id="telecom-admin-od", title="Telecom: commuting flows between administrative units",
        description="Devices per (home unit, day unit) pair, counted from the device-level table inside the operator, "
        "as lines between points inside the units; equal units give zero-length lines. Pairs of k or fewer "
        "devices are withheld.",
        source=aod, id_expr=aod.c.id, id_schema=INTEGER, geom=aod.c.geom, geometry_type="LineString",
        props=(_p("region", aod.c.region_id, STRING, "Region id"),
               _p("origin_code", aod.c.origin_unit, STRING, "Home unit (code)"),
               _p("origin_name", aod.c.origin_name, STRING, "Home unit"),
               _p("dest_code", aod.c.dest_unit, STRING, "Day unit (code)"),
               _p("dest_name", aod.c.dest_name, STRING, "Day unit"),
               _p("level", aod.c.level, INTEGER, "Admin level of both units"),
               _p("n_devices", aod.c.count, INTEGER, "Devices"), _p("period", aod.c.period, STRING, "Month")),
        temporal=Temporal(aod.c.p0, aod.c.p1, True), keywords=("telecom", "commuting", "origin-destination",
                                                               "admin units"),
        versioned=("public.telecom_od", "public.admin_unit")))
    return out


# --------------------------------------------------------------------------------------------- open properties
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


async def with_open_props(conn: Any, layer: Layer) -> Layer:
    """The layer with one property per key of its ``open_props`` object found in the data, typed by the JSON
    values it holds (numbers, booleans and texts are queryable; objects and arrays stay JSON). Keys that are not
    plain names, or that a built-in property already uses, are left in the data only."""
    if layer.open_props is None:
        return layer
    static = layer.static_props if layer.static_props is not None else layer.props
    col = layer.open_props
    each = func.jsonb_each(col).table_valued("key", "value").render_derived("kv")
    rows = (await conn.execute(
        select(each.c.key, func.array_agg(func.distinct(func.jsonb_typeof(each.c.value))))
        .select_from(layer.source).join(each, literal(True)).group_by(each.c.key).order_by(each.c.key))).all()
    taken = {p.name for p in static} | {"id", "geometry"}
    extra = []
    for key, kinds in rows:
        if key in taken or not _KEY_NAME.fullmatch(key):
            continue
        kinds = set(kinds) - {"null"}
        value = col[key]
        typeof = func.jsonb_typeof(value)
        if kinds == {"number"}:
            expr, schema = case((typeof == "number", value.astext.cast(Double))), NUMBER
        elif kinds == {"boolean"}:
            expr, schema = case((typeof == "boolean", value.astext.cast(Boolean))), BOOLEAN
        elif kinds == {"object"} or kinds == {"array"}:
            expr, schema = value, _s(next(iter(kinds)))
        else:  # texts, or a mixture: as text
            expr, schema = value.astext, STRING
        extra.append(_p(key, expr, schema, f"Imported attribute '{key}'"))
    return replace(layer, props=(*static, *extra), static_props=static)


# --------------------------------------------------------------------------------------------- published tables
_PG_SCHEMAS: dict[str, JsonSchema] = {
    "int2": INTEGER, "int4": INTEGER, "int8": INTEGER, "float4": NUMBER, "float8": NUMBER, "numeric": NUMBER,
    "bool": BOOLEAN, "date": DATE, "timestamp": DATETIME, "timestamptz": DATETIME, "text": STRING,
    "varchar": STRING, "bpchar": STRING, "uuid": _s("string", format="uuid"), "json": _s("object"),
    "jsonb": _s("object"),
}
_PG_TYPES: dict[str, Any] = {
    "int2": SmallInteger, "int4": Integer, "int8": BigInteger, "float4": Float, "float8": Double, "numeric": Numeric,
    "bool": Boolean, "date": Date, "timestamp": DateTime, "timestamptz": DateTime(timezone=True), "text": Text,
    "varchar": Text, "bpchar": Text, "uuid": Uuid, "json": JSON, "jsonb": JSONB,
}
_GEOMETRY_NAMES = {
    "POINT": "Point", "MULTIPOINT": "MultiPoint", "LINESTRING": "LineString", "MULTILINESTRING": "MultiLineString",
    "POLYGON": "Polygon", "MULTIPOLYGON": "MultiPolygon", "GEOMETRYCOLLECTION": "GeometryCollection",
}

_INTROSPECT = text(
    """
    SELECT c.column_name, c.udt_name, c.ordinal_position, c.is_nullable = 'YES' AS nullable,
           gc.type AS geometry_type, gc.srid
    FROM information_schema.columns c
    LEFT JOIN geometry_columns gc ON gc.f_table_schema = c.table_schema AND gc.f_table_name = c.table_name
         AND gc.f_geometry_column = c.column_name
    WHERE c.table_schema = :schema AND c.table_name = :table
    ORDER BY c.ordinal_position
    """
)


_PUBLISHED = (
    "SELECT p.layer_id, p.schema_name, p.table_name, p.title, p.description, p.id_column, p.geometry_column, "
    "p.datetime_column, p.required_role::text AS required_role, p.keywords, p.listed, p.style, p.context, "
    "CASE WHEN p.required_role IS NOT NULL THEN r.owner END AS owner "
    "FROM published_layer p LEFT JOIN analysis_run r ON r.run_id = p.run_id "
)


async def published_layers(conn: Any, known: Mapping[str, Layer] | None = None,
                           layer_id: str | None = None) -> list[Layer]:
    """Layers for the tables registered in ``published_layer``: the listed ones (the catalogue), or the one named
    ``layer_id``, listed or not (a result read by its URL). Introspected; a layer already ``known`` with the same
    table is kept as it is — results never change shape, and re-reading them after every job made the catalogue
    refresh grow with the number of results."""
    if layer_id is None:
        rows = (await conn.execute(text(_PUBLISHED + "WHERE p.listed ORDER BY p.layer_id"))).mappings().all()
    else:
        rows = (await conn.execute(text(_PUBLISHED + "WHERE p.layer_id = :id"), {"id": layer_id})).mappings().all()
    layers = []
    for r in rows:
        old = (known or {}).get(r["layer_id"])
        if old is not None and old.versioned == (f"{r['schema_name']}.{r['table_name']}",):
            role = Role(r["required_role"]) if r["required_role"] else None
            layers.append(replace(old, required_role=role, owner=r["owner"], title=r["title"],
                                  description=r["description"] or r["title"], keywords=tuple(r["keywords"] or ()),
                                  listed=r["listed"], style=r["style"], context=r["context"]))
            continue
        cols = (await conn.execute(_INTROSPECT, {"schema": r["schema_name"], "table": r["table_name"]})).all()
        if not cols:
            continue
        md = MetaData()
        sa_cols = [Column(c.column_name, _PG_TYPES.get(c.udt_name, Text), nullable=c.nullable) for c in cols]
        table = Table(r["table_name"], md, *sa_cols, schema=r["schema_name"])
        geom_col = r["geometry_column"]
        geom = None
        gtype = "None"
        props = []
        for c in cols:
            if c.column_name == geom_col:
                geom = table.c[c.column_name]
                if c.srid and c.srid != 4326:
                    geom = func.ST_Transform(geom, 4326)
                gtype = _GEOMETRY_NAMES.get((c.geometry_type or "").upper(), "Geometry")
                continue
            if c.column_name == r["id_column"] or c.udt_name == "geometry":
                continue
            schema = _PG_SCHEMAS.get(c.udt_name, STRING)
            props.append(_p(c.column_name, table.c[c.column_name], schema))
        id_udt = next(c.udt_name for c in cols if c.column_name == r["id_column"])
        dt_col = r["datetime_column"]
        dt_udt = next((c.udt_name for c in cols if c.column_name == dt_col), None)
        layers.append(Layer(
            id=r["layer_id"], title=r["title"], description=r["description"] or r["title"], source=table,
            id_expr=table.c[r["id_column"]], id_schema=_PG_SCHEMAS.get(id_udt, STRING), geom=geom,
            geometry_type=gtype, props=tuple(props),
            temporal=Temporal(table.c[dt_col], table.c[dt_col], False, dt_udt == "date") if dt_col else None,
            required_role=Role(r["required_role"]) if r["required_role"] else None,
            keywords=tuple(r["keywords"] or ()), owner=r["owner"],
            versioned=(f"{r['schema_name']}.{r['table_name']}",),
            listed=r["listed"], style=r["style"], context=r["context"],
        ))
    return layers


# --------------------------------------------------------------------------------------------- extents
def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time.min, tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
    return str(value)


async def compute_extent(conn: Any, layer: Layer) -> Extent:
    cols: list[Any] = [func.count().label("n")]
    if layer.geom is not None:
        box = func.ST_Extent(layer.geom)
        cols += [func.ST_XMin(box).label("x0"), func.ST_YMin(box).label("y0"), func.ST_XMax(box).label("x1"),
                 func.ST_YMax(box).label("y1")]
    if layer.temporal is not None:
        t = layer.temporal
        cols.append(func.min(t.start).label("t0"))
        if t.end is not None:
            cols += [func.max(t.end).label("t1"), func.bool_or(t.end.is_(None)).label("open_end")]
    region = layer.prop("region")
    if region is not None:
        cols.append(func.array_agg(func.distinct(region.expr)).label("regions"))
    source = layer.extent_source if layer.extent_source is not None else layer.source
    row = (await conn.execute(select(*cols).select_from(source))).mappings().one()
    bbox = None
    if layer.geom is not None and row["x0"] is not None:
        bbox = (float(row["x0"]), float(row["y0"]), float(row["x1"]), float(row["y1"]))
    interval = None
    if layer.temporal is not None and row["n"]:
        end = None if row.get("open_end") else row.get("t1")
        interval = (_iso(row["t0"]), _iso(end))
    regions = tuple(sorted(r for r in (row.get("regions") or ()) if r is not None))
    return Extent(bbox, interval, int(row["n"]), regions)


@dataclass(frozen=True)
class Catalog:
    """One consistent view of the layers: replaced as a whole when the data change, never mutated."""

    layers: dict[str, Layer]
    crs: tuple[str, ...] = field(default_factory=lambda: supported_uris(()))  # CRS URIs offered (Part 2)
    versions: Mapping[str, int] = field(default_factory=dict)  # table_version when the catalogue was read
    published_ids: frozenset[str] = frozenset()

    def get(self, layer_id: str) -> Layer | None:
        return self.layers.get(layer_id)

    def visible(self, role: Role | None, actor: str | None = None) -> list[Layer]:
        return [lyr for lyr in self.layers.values() if lyr.readable_by(role, actor)]


_VERSIONS = text("SELECT table_name, version FROM table_version")
_PUBLISHED_TABLE = "public.published_layer"
UNLISTED_CACHE = 512  # result layers read by URL kept in memory per process
_REGIONS = text("SELECT name, attribution FROM region ORDER BY region_id")
_SRIDS = text("SELECT DISTINCT analysis_crs FROM region")


async def _builtins(conn: Any, security: SecuritySettings, license_url: str | None) -> tuple[list[Layer], tuple]:
    """The built-in layers with the attribution of the regions loaded (e.g. the census sources of the demo) and the
    data licence link of the service; and the CRS URIs offered (each region's metric CRS among them)."""
    regions = (await conn.execute(_REGIONS)).all()
    srids = tuple((await conn.execute(_SRIDS)).scalars())
    attribution = "; ".join(f"{name}: {attr}" for name, attr in regions if attr) or None
    layers = [replace(lyr, attribution=attribution, license=license_url) for lyr in builtin_layers(security)]
    return layers, supported_uris(srids)


async def load_catalog(
    engine: AsyncEngine, security: SecuritySettings, license_url: str | None, pending: list[str],
) -> Catalog:
    """The catalogue: built-in and published layers, and the table versions it was read at. Extents are not
    computed here: every layer's id is appended to ``pending`` (see :func:`with_extents`)."""
    async with engine.connect() as conn:
        versions = dict((await conn.execute(_VERSIONS)).all())
        layers, crs = await _builtins(conn, security, license_url)
        published = await published_layers(conn)
        out = {}
        for lyr in [*layers, *published]:
            out[lyr.id] = await with_open_props(conn, lyr)
            pending.append(lyr.id)
    return Catalog(out, crs, versions, frozenset(lyr.id for lyr in published))


async def with_extents(engine: AsyncEngine, catalog: Catalog, ids: Sequence[str]) -> Catalog:
    """The catalogue with the extents of the layers ``ids`` computed from the data. Each is a scan of the layer's
    source (5 million households: seconds each), so this runs without the per-statement limit of requests."""
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
        layers = dict(catalog.layers)
        for i in ids:
            if i in layers:
                layers[i] = replace(layers[i], extent=await compute_extent(conn, layers[i]))
    return replace(catalog, layers=layers)


async def refresh_catalog(engine: AsyncEngine, catalog: Catalog, security: SecuritySettings,
                          license_url: str | None, pending: list[str]) -> Catalog:
    """The catalogue as the data stand now: compared by ``table_version`` (bumped by a trigger on every write),
    a change of ``published_layer`` re-reads the published layers (job results, published tables), of ``region``
    the CRS list and attribution, and of any table a layer reads its extent (edits, imports, telecom releases,
    regions created or deleted). Unchanged: the same object."""
    async with engine.connect() as conn:
        versions = dict((await conn.execute(_VERSIONS)).all())
        changed = {t for t in versions.keys() | catalog.versions.keys()
                   if versions.get(t) != catalog.versions.get(t)}
        if not changed:
            return catalog
        crs = catalog.crs
        layers = {k: v for k, v in catalog.layers.items() if k not in catalog.published_ids}
        rebuilt: set[str] = set()
        if "public.region" in changed:
            # Built anew (attribution), with new source selectables: their properties must be read again from the
            # new sources (properties of the old ones would name a second copy of the subquery in SQL).
            builtins, crs = await _builtins(conn, security, license_url)
            layers = {lyr.id: lyr for lyr in builtins}
            rebuilt = set(layers)
        published_ids = catalog.published_ids
        if "public.published_layer" in changed:
            published = await published_layers(
                conn, {k: v for k, v in catalog.layers.items() if k in catalog.published_ids})
            published_ids = frozenset(lyr.id for lyr in published)
        else:
            published = [catalog.layers[k] for k in catalog.published_ids]
        out = {}
        for lyr in [*layers.values(), *published]:
            old = catalog.layers.get(lyr.id)
            stale = old is None or bool(set(lyr.versioned) & changed)
            if stale or lyr.id in rebuilt:
                lyr = await with_open_props(conn, lyr)
            if stale:  # the old extent (if any) until the new one is computed (pending)
                pending.append(lyr.id)
            out[lyr.id] = replace(lyr, extent=old.extent if old is not None else Extent())
    return Catalog(out, crs, versions, published_ids)


class LiveCatalog:
    """The catalogue of one service process, kept in step with the database.

    ``current()`` checks the table versions at most every ``min_interval_s`` (one small query) and, when the data
    changed, builds the next catalogue. Checks are single-flight: concurrent requests wait for the check under way
    instead of starting their own, and a check counts only once it has finished reading — a request is never
    answered from a catalogue read before it asked (``force``) or before the interval."""

    def __init__(self, engine: AsyncEngine, security: SecuritySettings, license_url: str | None = None,
                 min_interval_s: float = 1.0,
                 derive: Callable[[AsyncEngine], Awaitable[Any]] | None = None, read_pool: Any = None,
                 derive_wait_s: float = 2.0) -> None:
        self.engine = engine
        # read replicas must have replayed what this catalogue has seen (app.db.ReadPool.require_current)
        self.read_pool = read_pool
        # brings derived tables (the public figures per unit) in step with their sources before a check; a check
        # waits for it at most derive_wait_s, then goes on with the tables as last derived (see _derived)
        self.derive = derive
        self.derive_wait_s = derive_wait_s
        self._deriving: asyncio.Task[None] | None = None
        self._extent_tasks: set[asyncio.Task[None]] = set()
        self.security = security
        self.license_url = license_url
        self.min_interval_s = min_interval_s
        self.catalog: Catalog | None = None
        self._checked = -math.inf  # monotonic time at which the last finished check started reading
        self._lock = asyncio.Lock()
        # results that are not listed, read by their URL: loaded on demand, forgotten when published_layer changes
        self._unlisted: OrderedDict[str, Layer] = OrderedDict()

    async def current(self, force: bool = False) -> Catalog:
        """The catalogue; with ``force``, as of now (after a write this process made, or a collection not found)."""
        asked = time.monotonic()
        if self.catalog is not None and not force and asked - self._checked < self.min_interval_s:
            return self.catalog
        async with self._lock:
            if self.catalog is not None and self._checked >= (asked if force else asked - self.min_interval_s):
                return self.catalog  # a check that started after we asked finished while we waited
            started = time.monotonic()
            before = self.catalog
            if self.derive is not None:
                await self._derived()
            pending: list[str] = []
            if before is None:
                new = await load_catalog(self.engine, self.security, self.license_url, pending)
            else:
                new = await refresh_catalog(self.engine, before, self.security, self.license_url, pending)
            self.catalog = self._with_merged(before, new, pending)
            if pending:
                await self._extents(pending)
            if before is None or self.catalog.versions.get(_PUBLISHED_TABLE) != before.versions.get(_PUBLISHED_TABLE):
                self._unlisted.clear()  # dismissed or expired results must not be served from memory
            if self.read_pool is not None and (before is None or self.catalog.versions != before.versions):
                await self.read_pool.require_current()
            self._checked = started
            return self.catalog

    async def _derived(self) -> None:
        """Run ``derive`` (one at a time) and wait for it at most ``derive_wait_s``. On the demo a rebuild of the
        public figures takes a fraction of a second and the next answer carries it; on a province (5 million
        households: about 30 s) answers go on with the figures last built while it finishes in the background,
        where before every request waited for it and the statement timeout failed them all."""
        if self._deriving is None or self._deriving.done():
            self._deriving = asyncio.get_running_loop().create_task(self._derive_logged(), name="tpa-derive")
        await self._briefly(self._deriving, "the public figures are being rebuilt; answers carry the last built "
                            "until it is done")

    def _with_merged(self, before: Catalog | None, new: Catalog, pending: list[str]) -> Catalog:
        """``new`` (read from ``before``) with the extents a background computation merged into the catalogue
        while it was read, for the layers ``new`` did not find stale."""
        latest = self.catalog
        if latest is None or latest is before:
            return new
        if new is before:  # nothing changed: the catalogue as merged meanwhile
            return latest
        return replace(new, layers={i: replace(lyr, extent=latest.layers[i].extent)
                                    if i not in pending and i in latest.layers else lyr
                                    for i, lyr in new.layers.items()})

    async def _extents(self, pending: list[str]) -> None:
        """Compute the extents of the layers whose data changed, waiting at most ``derive_wait_s``: on the demo they
        are in the next answer; on a province the answers go on with the extents as they were (or none yet) while
        they are computed, and the catalogue takes them when done, but for layers whose data changed again
        meanwhile (the newer check computes those)."""
        base = self.catalog
        assert base is not None

        async def compute() -> None:
            try:
                done = await with_extents(self.engine, base, pending)
            except Exception as exc:  # noqa: BLE001 (the extents stay as they were; the next change tries again)
                log.warning("computing collection extents failed: %s", type(exc).__name__)
                return
            cur = self.catalog
            if cur is None:
                return
            # kept for the layers whose tables have not changed since (a newer check computes the others)
            changed = {t for t in cur.versions.keys() | base.versions.keys()
                       if cur.versions.get(t) != base.versions.get(t)}
            fresh = {i: replace(cur.layers[i], extent=done.layers[i].extent) for i in pending
                     if i in done.layers and i in cur.layers and not set(cur.layers[i].versioned) & changed}
            self.catalog = replace(cur, layers={**cur.layers, **fresh})

        task = asyncio.get_running_loop().create_task(compute(), name="tpa-extents")
        self._extent_tasks.add(task)
        task.add_done_callback(self._extent_tasks.discard)
        await self._briefly(task, f"collection extents of {len(pending)} layers are being computed; answers carry "
                            "the previous ones")

    async def _briefly(self, task: asyncio.Task[None], still_running: str) -> None:
        """Wait for background work at most ``derive_wait_s``; past that it goes on without the request."""
        try:
            await asyncio.wait_for(asyncio.shield(task), self.derive_wait_s)
        except TimeoutError:
            log.info(still_running)

    async def _derive_logged(self) -> None:
        assert self.derive is not None
        try:
            await self.derive(self.engine)
        except Exception as exc:  # noqa: BLE001 (the catalogue is read anyway; the next check tries again)
            log.warning("rebuilding the public figures failed: %s", type(exc).__name__)

    async def close(self) -> None:
        """Stop a rebuild or extents under way (at shutdown: a rebuild is one transaction, nothing half-built
        stays)."""
        tasks = [t for t in (self._deriving, *self._extent_tasks) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def unlisted(self, layer_id: str) -> Layer | None:
        """A layer of ``published_layer`` that is not in this catalogue (a result not published, or one published
        since the catalogue was read), by its id; None if there is none."""
        hit = self._unlisted.get(layer_id)
        if hit is not None:
            self._unlisted.move_to_end(layer_id)
            return hit
        async with self.engine.connect() as conn:
            found = await published_layers(conn, layer_id=layer_id)
            if not found:
                return None
            layer = await with_open_props(conn, found[0])
            layer = replace(layer, extent=await compute_extent(conn, layer))
        if self.read_pool is not None:  # a result written since the last check: no replica without it
            await self.read_pool.require_current()
        self._unlisted[layer_id] = layer
        while len(self._unlisted) > UNLISTED_CACHE:
            self._unlisted.popitem(last=False)
        return layer

    async def find(self, layer_id: str) -> Layer | None:
        """A collection by id: from the catalogue, else from ``published_layer`` (a result read by its URL, or a
        layer published a moment ago, perhaps by another process, that the catalogue has not read yet)."""
        layer = (await self.current()).get(layer_id)
        return layer if layer is not None else await self.unlisted(layer_id)

    def invalidate(self) -> None:
        """Check the versions again on the next request (this process wrote something)."""
        self._checked = -math.inf
