"""GeoAlchemy2 models of the domain schema (docs/methodology.md#registry).

The DDL itself is owned by the Alembic revisions in ``migrations/``; these models describe the
same tables for queries, and ``tests/test_schema.py`` checks that both agree column by column.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, CHAR, DATERANGE, ENUM, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.models import codes


def pg_enum(name: str) -> ENUM:
    values = [m.value for m in codes.PG_ENUMS[name]]
    return ENUM(*values, name=name, create_type=False)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB}


class Validity:
    """Columns every domain table carries (docs/methodology.md#registry): yearly validity and provenance."""

    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(Text)


class Region(Base):
    __tablename__ = "region"
    region_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(CHAR(2))
    code_system: Mapped[str] = mapped_column(Text)
    analysis_crs: Mapped[int] = mapped_column(Integer)
    poverty_line: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(CHAR(3))
    poverty_line_note: Mapped[str | None] = mapped_column(Text)
    default_year: Mapped[int | None] = mapped_column(Integer)
    monitoring_line_factor: Mapped[Decimal] = mapped_column(Numeric(4, 2), server_default="1.5")
    description: Mapped[str | None] = mapped_column(Text)
    attribution: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AdminUnit(Validity, Base):
    __tablename__ = "admin_unit"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    level: Mapped[int] = mapped_column(SmallInteger)
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class Village(Validity, Base):
    __tablename__ = "village"
    code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"), primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    is_poverty_village: Mapped[bool] = mapped_column(Boolean)
    households: Mapped[int | None] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(Integer)
    labour_force: Mapped[int | None] = mapped_column(Integer)
    migrant_workers: Mapped[int | None] = mapped_column(Integer)
    arable_mu: Mapped[Decimal | None] = mapped_column(Numeric(12, 1))
    km_to_township: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    paved_road: Mapped[bool | None] = mapped_column(Boolean)
    bus_service: Mapped[bool | None] = mapped_column(Boolean)
    grid_power: Mapped[bool | None] = mapped_column(Boolean)
    broadband: Mapped[bool | None] = mapped_column(Boolean)
    clinic: Mapped[bool | None] = mapped_column(Boolean)
    licensed_doctors: Mapped[int | None] = mapped_column(Integer)
    collective_income: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    unsafe_water_households: Mapped[int | None] = mapped_column(Integer)
    geom_point = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)


class Household(Validity, Base):
    __tablename__ = "household"
    hh_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    village_code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=True)
    id_standard: Mapped[str] = mapped_column(pg_enum("id_standard"))
    hh_type: Mapped[str] = mapped_column(pg_enum("household_type"))
    main_cause: Mapped[str] = mapped_column(pg_enum("cause"))
    other_causes: Mapped[list[str]] = mapped_column(ARRAY(pg_enum("cause")))
    status: Mapped[str] = mapped_column(pg_enum("household_status"))
    year_identified: Mapped[int] = mapped_column(SmallInteger)
    year_exited: Mapped[int | None] = mapped_column(SmallInteger)
    size: Mapped[int] = mapped_column(SmallInteger)
    income_wage: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    income_business: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    income_property: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    income_transfer: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    expense_production: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    net_income_pc: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    house_area_m2: Mapped[Decimal | None] = mapped_column(Numeric(8, 1))
    house_structure: Mapped[str | None] = mapped_column(Text)
    house_safety_grade: Mapped[str | None] = mapped_column(pg_enum("safety_grade"))
    water_safe: Mapped[bool | None] = mapped_column(Boolean)
    water_difficulty: Mapped[bool | None] = mapped_column(Boolean)
    toilet: Mapped[str | None] = mapped_column(pg_enum("toilet_type"))
    cooking_fuel: Mapped[str | None] = mapped_column(pg_enum("cooking_fuel"))
    electricity: Mapped[bool | None] = mapped_column(Boolean)
    access_road: Mapped[str | None] = mapped_column(pg_enum("access_road"))
    km_to_main_road: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    arable_mu: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    irrigated_mu: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    forest_mu: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    coop_member: Mapped[bool] = mapped_column(Boolean)
    microcredit: Mapped[bool] = mapped_column(Boolean)
    food_insecure: Mapped[bool] = mapped_column(Boolean)
    clothing_insecure: Mapped[bool] = mapped_column(Boolean)
    family_doctor: Mapped[bool] = mapped_column(Boolean)
    reported_needs: Mapped[list[str]] = mapped_column(ARRAY(pg_enum("need_code")))
    # rigid expenditure of the record's income year (revision 0011): out-of-pocket medical costs, schooling, losses
    expense_medical: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    expense_education: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    loss_disaster: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))


class Person(Validity, Base):
    __tablename__ = "person"
    person_id: Mapped[str] = mapped_column(Text, primary_key=True)
    hh_id: Mapped[str] = mapped_column(ForeignKey("household.hh_id", ondelete="CASCADE"))
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    relation: Mapped[str] = mapped_column(pg_enum("relation"))
    sex: Mapped[str] = mapped_column(pg_enum("sex"))
    birth_year: Mapped[int] = mapped_column(SmallInteger)
    ethnicity: Mapped[str | None] = mapped_column(Text)
    education: Mapped[str | None] = mapped_column(pg_enum("education_level"))
    in_school: Mapped[str] = mapped_column(pg_enum("school_stage"))
    health: Mapped[str] = mapped_column(pg_enum("health_status"))
    labour: Mapped[str] = mapped_column(pg_enum("labour_status"))
    migrant_months: Mapped[int] = mapped_column(SmallInteger)
    med_insured: Mapped[bool] = mapped_column(Boolean)
    pension_insured: Mapped[bool] = mapped_column(Boolean)
    disability_grade: Mapped[int | None] = mapped_column(SmallInteger)


class Project(Validity, Base):
    __tablename__ = "project"
    project_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(pg_enum("project_type"))
    subtype: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=False)
    admin_code: Mapped[str | None] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(pg_enum("project_status"))
    budget_total: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    budget_by_level: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    capacity: Mapped[int | None] = mapped_column(Integer)
    service_radius_km: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    addresses_needs: Mapped[list[str]] = mapped_column(ARRAY(pg_enum("need_code")))


class ProjectBeneficiary(Base):
    __tablename__ = "project_beneficiary"
    project_id: Mapped[str] = mapped_column(ForeignKey("project.project_id", ondelete="CASCADE"), primary_key=True)
    hh_id: Mapped[str] = mapped_column(ForeignKey("household.hh_id", ondelete="CASCADE"), primary_key=True)
    year: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    benefit_type: Mapped[str] = mapped_column(Text, primary_key=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))


class Facility(Validity, Base):
    __tablename__ = "facility"
    fac_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    class_: Mapped[str] = mapped_column("class", pg_enum("facility_class"))
    name: Mapped[str | None] = mapped_column(Text)
    capacity: Mapped[int | None] = mapped_column(Integer)
    admin_code: Mapped[str | None] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=False)


class IndicatorDef(Base):
    __tablename__ = "indicator_def"
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    system: Mapped[str] = mapped_column(pg_enum("indicator_system"))
    direction: Mapped[str] = mapped_column(pg_enum("indicator_direction"))
    unit: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    formula: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)


class CauseNeedProject(Base):
    __tablename__ = "cause_need_project"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region_id: Mapped[str | None] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    cause: Mapped[str] = mapped_column(pg_enum("cause"))
    need: Mapped[str | None] = mapped_column(pg_enum("need_code"))
    project_type: Mapped[str | None] = mapped_column(pg_enum("project_type"))
    note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)


class H3Cell(Base):
    __tablename__ = "h3_cell"
    h3_index: Mapped[str] = mapped_column(Text, primary_key=True)
    res: Mapped[int] = mapped_column(SmallInteger)
    parent: Mapped[str | None] = mapped_column(Text)
    geom = mapped_column(Geometry("POLYGON", srid=4326, spatial_index=False), nullable=False)


class TelecomAgg(Validity, Base):
    __tablename__ = "telecom_agg"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    unit_type: Mapped[str] = mapped_column(pg_enum("unit_type"))
    unit_id: Mapped[str] = mapped_column(Text)
    h3_res: Mapped[int | None] = mapped_column(SmallInteger)
    period: Mapped[Any] = mapped_column(DATERANGE)
    indicator: Mapped[str] = mapped_column(ForeignKey("indicator_def.code"))
    value: Mapped[float | None] = mapped_column(Double)
    n_subscribers: Mapped[int | None] = mapped_column(Integer)
    suppressed: Mapped[bool] = mapped_column(Boolean)
    hour: Mapped[int | None] = mapped_column(SmallInteger)


class TelecomOD(Validity, Base):
    __tablename__ = "telecom_od"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    unit_type: Mapped[str] = mapped_column(pg_enum("unit_type"))
    origin_unit: Mapped[str] = mapped_column(Text)
    dest_unit: Mapped[str] = mapped_column(Text)
    period: Mapped[Any] = mapped_column(DATERANGE)
    count: Mapped[int | None] = mapped_column(Integer)
    suppressed: Mapped[bool] = mapped_column(Boolean)
    h3_res: Mapped[int | None] = mapped_column(SmallInteger)


class AnalysisRun(Base):
    __tablename__ = "analysis_run"
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    region_id: Mapped[str | None] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    input_hash: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(pg_enum("run_status"))
    message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(SmallInteger)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    result_table: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    owner: Mapped[str | None] = mapped_column(Text)
    owner_role: Mapped[str | None] = mapped_column(pg_enum("api_role"))
    mode: Mapped[str] = mapped_column(Text)
    time_limit_s: Mapped[int | None] = mapped_column(Integer)
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    pruned: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_key"
    key_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    prefix: Mapped[str] = mapped_column(Text, unique=True)
    key_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(pg_enum("api_role"))
    name: Mapped[str] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class TableVersion(Base):
    __tablename__ = "table_version"
    table_name: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class PublishedLayer(Base):
    __tablename__ = "published_layer"
    layer_id: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_name: Mapped[str] = mapped_column(Text)
    table_name: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    id_column: Mapped[str] = mapped_column(Text)
    geometry_column: Mapped[str | None] = mapped_column(Text)
    datetime_column: Mapped[str | None] = mapped_column(Text)
    required_role: Mapped[str | None] = mapped_column(pg_enum("api_role"))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("analysis_run.run_id", ondelete="CASCADE"))
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text))
    listed: Mapped[bool] = mapped_column(Boolean)
    style: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class AuditLog(Base):
    """Append-only record of feature edits (OGC API - Features Part 4)."""

    __tablename__ = "audit_log"
    audit_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(pg_enum("api_role"))
    action: Mapped[str] = mapped_column(Text)
    collection: Mapped[str] = mapped_column(Text)
    feature_id: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ImportLog(Base):
    """One committed file import (``tpa import``): what was read and what it changed."""

    __tablename__ = "import_log"
    import_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(Text)
    mapping_sha256: Mapped[str | None] = mapped_column(Text)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    rows_read: Mapped[int] = mapped_column(Integer)
    inserted: Mapped[int] = mapped_column(Integer)
    updated: Mapped[int] = mapped_column(Integer)
    unchanged: Mapped[int] = mapped_column(Integer)
    closed: Mapped[int] = mapped_column(Integer)
    archived: Mapped[int] = mapped_column(Integer)
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)


class TelecomRelease(Base):
    """One release of telecom aggregates for a region and period: parameters, k and the ε spent."""

    __tablename__ = "telecom_release"
    release_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    period: Mapped[Any] = mapped_column(DATERANGE)
    k: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[float] = mapped_column(Double)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    rows_published: Mapped[int] = mapped_column(Integer)
    rows_suppressed: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AdminStat(Base):
    """Public registry figures per administrative unit and year (derived; app/repositories/stats.py)."""

    __tablename__ = "admin_stat"
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    admin_code: Mapped[str] = mapped_column(Text, primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot: Mapped[dt.date] = mapped_column(Date)
    level: Mapped[int] = mapped_column(SmallInteger)
    villages: Mapped[int] = mapped_column(Integer)
    population: Mapped[int | None] = mapped_column(BigInteger)
    registered_households: Mapped[int | None] = mapped_column(Integer)
    poor_households: Mapped[int | None] = mapped_column(Integer)
    poor_persons: Mapped[int | None] = mapped_column(Integer)
    exited_households: Mapped[int | None] = mapped_column(Integer)
    monitored_households: Mapped[int | None] = mapped_column(Integer)
    reached_households: Mapped[int | None] = mapped_column(Integer)
    reached_persons: Mapped[int | None] = mapped_column(Integer)
    poverty_rate: Mapped[float | None] = mapped_column(Double)
    suppressed: Mapped[bool] = mapped_column(Boolean)
    entered_households: Mapped[int | None] = mapped_column(Integer)
    exits: Mapped[int | None] = mapped_column(Integer)
    returns: Mapped[int | None] = mapped_column(Integer)
    income_p25: Mapped[float | None] = mapped_column(Double)
    income_median: Mapped[float | None] = mapped_column(Double)
    income_p75: Mapped[float | None] = mapped_column(Double)


class AdminStatState(Base):
    __tablename__ = "admin_stat_state"
    id: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    versions: Mapped[dict[str, Any]] = mapped_column(JSONB)
    built: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class MonitoringRule(Base):
    """A screening rule of dynamic monitoring (revision 0013): a CQL2 text expression over household-records."""

    __tablename__ = "monitoring_rule"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region_id: Mapped[str | None] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    rule_id: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    title_zh: Mapped[str | None] = mapped_column(Text)
    expression: Mapped[str] = mapped_column(Text)
    report: Mapped[list[str]] = mapped_column(ARRAY(Text))
    source: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean)


class Alert(Base):
    """A household a screening found, in one year, with the rules that fired (revision 0013)."""

    __tablename__ = "alert"
    alert_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    hh_id: Mapped[str] = mapped_column(ForeignKey("household.hh_id", ondelete="CASCADE"))
    year: Mapped[int] = mapped_column(Integer)
    village_code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=True)
    categories: Mapped[list[str]] = mapped_column(ARRAY(Text))
    rules: Mapped[list[str]] = mapped_column(ARRAY(Text))
    trigger_values: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="new")
    note: Mapped[str | None] = mapped_column(Text)
    screened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=text("clock_timestamp()"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=text("clock_timestamp()"))


class RiskModel(Base):
    """A return-risk model trained for a region, with what it learned from and how it validated (revision 0014)."""

    __tablename__ = "risk_model"
    model_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    trained_from: Mapped[int] = mapped_column(Integer)
    trained_until: Mapped[int] = mapped_column(Integer)
    scored_year: Mapped[int] = mapped_column(Integer)
    trained_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=text("clock_timestamp()"))
    owner: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    features: Mapped[Any] = mapped_column(JSONB)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB)
    libraries: Mapped[dict[str, Any]] = mapped_column(JSONB)
    threshold: Mapped[float] = mapped_column(Double)
    model: Mapped[str] = mapped_column(Text)


class RiskPrediction(Base):
    """A household's probability of being in poverty the year after a record (revision 0014; restricted)."""

    __tablename__ = "risk_prediction"
    model_id: Mapped[str] = mapped_column(ForeignKey("risk_model.model_id", ondelete="CASCADE"), primary_key=True)
    hh_id: Mapped[str] = mapped_column(ForeignKey("household.hh_id", ondelete="CASCADE"), primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    year: Mapped[int] = mapped_column(Integer)
    village_code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    geom = mapped_column(Geometry("POINT", srid=4326, spatial_index=False), nullable=True)
    probability: Mapped[float] = mapped_column(Double)
    high_risk: Mapped[bool] = mapped_column(Boolean)
    rules_fired: Mapped[int] = mapped_column(Integer)
    factors: Mapped[Any] = mapped_column(JSONB)


class VillageRisk(Base):
    """Village figures of a region's latest return-risk model, suppressed (revision 0014; public)."""

    __tablename__ = "village_risk"
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"), primary_key=True)
    village_code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("risk_model.model_id", ondelete="CASCADE"))
    year: Mapped[int] = mapped_column(Integer)
    high_risk: Mapped[int | None] = mapped_column(Integer)
    mean_probability: Mapped[float | None] = mapped_column(Double)
    suppressed: Mapped[bool] = mapped_column(Boolean)


class RoadNetwork(Base):
    """A version of a region's road network with the speeds it was costed with (revision 0016)."""

    __tablename__ = "road_network"
    network_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    current: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    speeds: Mapped[dict[str, Any]] = mapped_column(JSONB)
    edges: Mapped[int] = mapped_column(Integer)
    vertices: Mapped[int] = mapped_column(Integer)
    length_km: Mapped[float] = mapped_column(Double)
    components: Mapped[int] = mapped_column(Integer)
    largest_component_share: Mapped[float] = mapped_column(Double)


class RoadEdge(Base):
    """An edge of a road network between two of its vertices (revision 0016)."""

    __tablename__ = "road_edge"
    network_id: Mapped[int] = mapped_column(ForeignKey("road_network.network_id", ondelete="CASCADE"),
                                            primary_key=True)
    edge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[int] = mapped_column(BigInteger)
    target: Mapped[int] = mapped_column(BigInteger)
    road_class: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    oneway: Mapped[int] = mapped_column(SmallInteger)
    surface: Mapped[str | None] = mapped_column(Text)
    length_m: Mapped[float] = mapped_column(Double)
    motor_kmh: Mapped[float | None] = mapped_column(Double)
    walk_kmh: Mapped[float | None] = mapped_column(Double)
    geom = mapped_column(Geometry("LINESTRING", srid=4326, spatial_index=False))


class Survey(Base):
    """A household survey of a region (revision 0017)."""

    __tablename__ = "survey"
    survey_id: Mapped[str] = mapped_column(Text, primary_key=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("region.region_id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(Text)
    year: Mapped[int] = mapped_column(Integer)
    design: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SurveyHousehold(Base):
    """A responding household of a survey: area, design, weight, income per person, covariates (revision 0017)."""

    __tablename__ = "survey_household"
    survey_id: Mapped[str] = mapped_column(ForeignKey("survey.survey_id", ondelete="CASCADE"), primary_key=True)
    hh_id: Mapped[str] = mapped_column(Text, primary_key=True)
    area_code: Mapped[str] = mapped_column(ForeignKey("admin_unit.code", ondelete="CASCADE"))
    stratum: Mapped[str | None] = mapped_column(Text)
    psu: Mapped[str | None] = mapped_column(Text)
    weight: Mapped[float] = mapped_column(Double)
    size: Mapped[int | None] = mapped_column(Integer)
    income_pc: Mapped[float] = mapped_column(Double)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB)
