"""Code lists of docs/methodology.md#codes as Python enums.

The database has the same lists as PostgreSQL enum types (migrations/sql/0001_schema.sql);
``tests/test_schema.py`` fails when the two drift apart.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class AdminLevel(IntEnum):
    COUNTRY, PROVINCE, PREFECTURE, COUNTY, TOWNSHIP, VILLAGE = range(6)


class Cause(StrEnum):
    """致贫原因 (registry form): one main cause plus up to two others."""

    illness = "illness"  # 因病
    disability = "disability"  # 因残
    schooling = "schooling"  # 因学
    disaster = "disaster"  # 因灾
    lack_land = "lack_land"  # 缺土地
    lack_water = "lack_water"  # 缺水
    lack_skills = "lack_skills"  # 缺技术
    lack_labour = "lack_labour"  # 缺劳力
    lack_capital = "lack_capital"  # 缺资金
    poor_transport = "poor_transport"  # 交通条件落后
    lack_motivation = "lack_motivation"  # 自身发展动力不足
    other = "other"  # 其它


class Need(StrEnum):
    L_FOOD = "L_FOOD"
    L_CLOTH = "L_CLOTH"
    L_EDU = "L_EDU"
    L_HEALTH = "L_HEALTH"
    L_HOUSE = "L_HOUSE"
    L_WATER = "L_WATER"
    P_SKILL = "P_SKILL"
    P_JOB = "P_JOB"
    P_CAPITAL = "P_CAPITAL"
    P_LAND = "P_LAND"
    P_IRRIG = "P_IRRIG"
    P_ROAD = "P_ROAD"
    P_MARKET = "P_MARKET"
    P_INDUSTRY = "P_INDUSTRY"
    P_MOTIV = "P_MOTIV"
    P_RELOC = "P_RELOC"
    P_RESIL = "P_RESIL"


LIVING_NEEDS = tuple(n for n in Need if n.startswith("L_"))
PRODUCTION_NEEDS = tuple(n for n in Need if n.startswith("P_"))


class ProjectType(StrEnum):
    industry = "industry"
    employment = "employment"
    relocation = "relocation"
    infrastructure_road = "infrastructure_road"
    infrastructure_water = "infrastructure_water"
    infrastructure_power_broadband = "infrastructure_power_broadband"
    housing_renovation = "housing_renovation"
    education = "education"
    health = "health"
    social_security = "social_security"
    ecological_compensation = "ecological_compensation"
    photovoltaic = "photovoltaic"
    ecommerce = "ecommerce"
    tourism = "tourism"
    microfinance = "microfinance"
    asset_income = "asset_income"  # cooperative dividends
    land_transfer = "land_transfer"
    skills_training = "skills_training"


class ProjectStatus(StrEnum):
    planned = "planned"
    under_construction = "under_construction"
    operating = "operating"
    completed = "completed"
    cancelled = "cancelled"


class FacilityClass(StrEnum):
    school_primary = "school_primary"
    school_junior = "school_junior"
    clinic = "clinic"
    hospital = "hospital"
    market = "market"
    bank = "bank"
    bus_stop = "bus_stop"
    water_plant = "water_plant"
    township_government = "township_government"  # added: the demo and gap analyses need 乡镇政府 points


class IdStandard(StrEnum):
    national = "national"
    provincial = "provincial"
    municipal = "municipal"


class HouseholdType(StrEnum):
    general = "general"  # 一般贫困户
    dibao = "dibao"  # 低保贫困户
    tekun = "tekun"  # 五保 / 特困供养户


class HouseholdStatus(StrEnum):
    poor = "poor"
    exited = "exited"
    returned = "returned"
    monitored = "monitored"


class SafetyGrade(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


class Toilet(StrEnum):
    flush = "flush"
    dry = "dry"
    none = "none"


class CookingFuel(StrEnum):
    electricity = "electricity"
    gas = "gas"
    biogas = "biogas"
    coal = "coal"
    firewood = "firewood"
    straw = "straw"
    dung = "dung"
    other = "other"


SOLID_FUELS = frozenset({CookingFuel.coal, CookingFuel.firewood, CookingFuel.straw, CookingFuel.dung})


class AccessRoad(StrEnum):
    dirt = "dirt"
    gravel = "gravel"
    cement = "cement"
    asphalt = "asphalt"


class Relation(StrEnum):
    head = "head"
    spouse = "spouse"
    child = "child"
    child_in_law = "child_in_law"
    grandchild = "grandchild"
    parent = "parent"
    sibling = "sibling"
    other = "other"


class Sex(StrEnum):
    male = "male"
    female = "female"


class Education(StrEnum):
    illiterate = "illiterate"
    primary = "primary"
    junior = "junior"
    senior = "senior"
    tertiary = "tertiary"


class InSchool(StrEnum):
    preschool = "preschool"
    primary = "primary"
    junior = "junior"
    senior = "senior"
    vocational = "vocational"
    tertiary = "tertiary"
    none = "none"


class Health(StrEnum):
    healthy = "healthy"
    chronic = "chronic"
    major_illness = "major_illness"
    disabled = "disabled"


class Labour(StrEnum):
    ordinary = "ordinary"
    skilled = "skilled"
    weak = "weak"  # 弱劳动力或半劳动力
    lost = "lost"  # 丧失劳动力
    none = "none"  # 无劳动力 (children, students)


class IndicatorSystem(StrEnum):
    living = "living"
    production = "production"
    context = "context"  # descriptive inputs (population, telecom counts) outside both subsystems


class Direction(StrEnum):
    positive = "+"
    negative = "-"


class UnitType(StrEnum):
    h3 = "h3"
    admin = "admin"


class RunStatus(StrEnum):
    """OGC API - Processes job status codes."""

    accepted = "accepted"
    running = "running"
    successful = "successful"
    failed = "failed"
    dismissed = "dismissed"


class MonitoringCategory(StrEnum):
    """The three groups of dynamic monitoring against return to poverty (防止返贫动态监测)."""

    unstable_exited = "unstable_exited"  # 脱贫不稳定户
    edge = "edge"  # 边缘易致贫户
    sudden_difficulty = "sudden_difficulty"  # 突发严重困难户


class AlertStatus(StrEnum):
    """Where an alert stands: new → verified → assisted → closed, or dismissed (from new or verified)."""

    new = "new"
    verified = "verified"
    assisted = "assisted"
    closed = "closed"
    dismissed = "dismissed"


class Role(StrEnum):
    analyst = "analyst"
    admin = "admin"


ROLE_RANK = {None: 0, Role.analyst: 1, Role.admin: 2}


def allowed(role: Role | None, needed: Role | None) -> bool:
    """Whether ``role`` (None: anonymous) reaches ``needed`` (None: public)."""
    return ROLE_RANK[role] >= ROLE_RANK[needed]


# Postgres enum type name -> Python enum, used by the ORM and the drift test.
PG_ENUMS: dict[str, type[StrEnum]] = {
    "cause": Cause,
    "need_code": Need,
    "project_type": ProjectType,
    "project_status": ProjectStatus,
    "facility_class": FacilityClass,
    "id_standard": IdStandard,
    "household_type": HouseholdType,
    "household_status": HouseholdStatus,
    "safety_grade": SafetyGrade,
    "toilet_type": Toilet,
    "cooking_fuel": CookingFuel,
    "access_road": AccessRoad,
    "relation": Relation,
    "sex": Sex,
    "education_level": Education,
    "school_stage": InSchool,
    "health_status": Health,
    "labour_status": Labour,
    "indicator_system": IndicatorSystem,
    "indicator_direction": Direction,
    "unit_type": UnitType,
    "run_status": RunStatus,
    "api_role": Role,
}


# Needs each project type addresses by default (inverse reading of docs/methodology.md#cause-table; projects carry
# their own ``addresses_needs``, this is what the demo and the import use when a source gives none).
PROJECT_TYPE_NEEDS: dict[ProjectType, frozenset[Need]] = {
    ProjectType.industry: frozenset({Need.P_INDUSTRY, Need.P_JOB, Need.P_CAPITAL}),
    ProjectType.employment: frozenset({Need.P_JOB}),
    ProjectType.relocation: frozenset({Need.P_RELOC, Need.L_HOUSE, Need.P_RESIL, Need.P_ROAD}),
    ProjectType.infrastructure_road: frozenset({Need.P_ROAD, Need.P_MARKET, Need.P_RESIL}),
    ProjectType.infrastructure_water: frozenset({Need.L_WATER, Need.P_IRRIG, Need.P_RESIL}),
    ProjectType.infrastructure_power_broadband: frozenset({Need.P_MARKET, Need.P_RESIL}),
    ProjectType.housing_renovation: frozenset({Need.L_HOUSE, Need.P_RESIL}),
    ProjectType.education: frozenset({Need.L_EDU}),
    ProjectType.health: frozenset({Need.L_HEALTH}),
    ProjectType.social_security: frozenset({Need.L_FOOD, Need.L_CLOTH, Need.L_HEALTH}),
    ProjectType.ecological_compensation: frozenset({Need.P_JOB}),
    ProjectType.photovoltaic: frozenset({Need.P_CAPITAL, Need.P_INDUSTRY}),
    ProjectType.ecommerce: frozenset({Need.P_MARKET}),
    ProjectType.tourism: frozenset({Need.P_INDUSTRY, Need.P_JOB}),
    ProjectType.microfinance: frozenset({Need.P_CAPITAL}),
    ProjectType.asset_income: frozenset({Need.P_CAPITAL, Need.P_INDUSTRY}),
    ProjectType.land_transfer: frozenset({Need.P_LAND}),
    ProjectType.skills_training: frozenset({Need.P_SKILL, Need.P_MOTIV}),
}


# Labels of the code lists for people, in English and Simplified Chinese (the names of the registry forms and of
# the national policy documents; docs/methodology.md#code-lists). Codes stay the API's values; pages and the portal
# show these.
CODE_LABELS: dict[str, dict[str, tuple[str, str]]] = {
    "household_status": {
        "poor": ("Poor", "未脱贫"), "exited": ("Exited poverty", "已脱贫"), "returned": ("Returned to poverty", "返贫"),
        "monitored": ("Monitored (at risk)", "监测户")},
    "cause": {
        "illness": ("Illness", "因病"), "disability": ("Disability", "因残"), "schooling": ("Schooling costs", "因学"),
        "disaster": ("Disaster", "因灾"), "lack_land": ("Lack of land", "缺土地"),
        "lack_water": ("Lack of water", "缺水"),
        "lack_skills": ("Lack of skills", "缺技术"), "lack_labour": ("Lack of labour", "缺劳力"),
        "lack_capital": ("Lack of capital", "缺资金"), "poor_transport": ("Poor transport", "交通条件落后"),
        "lack_motivation": ("Lack of motivation", "自身发展动力不足"), "other": ("Other", "其它")},
    "need": {
        "L_FOOD": ("Enough food", "不愁吃"), "L_CLOTH": ("Enough clothing", "不愁穿"),
        "L_EDU": ("Compulsory schooling", "义务教育有保障"), "L_HEALTH": ("Basic medical care", "基本医疗有保障"),
        "L_HOUSE": ("Safe housing", "住房安全有保障"), "L_WATER": ("Safe drinking water", "饮水安全有保障"),
        "P_SKILL": ("Skills training", "技能培训"), "P_JOB": ("Employment", "就业务工"),
        "P_CAPITAL": ("Credit", "小额信贷"), "P_LAND": ("Land consolidation or transfer", "土地整理流转"),
        "P_IRRIG": ("Farm water", "农田水利"), "P_ROAD": ("Transport", "交通道路"),
        "P_MARKET": ("Market access", "市场与电商"), "P_INDUSTRY": ("A local industry", "产业带动"),
        "P_MOTIV": ("Motivation", "扶志扶智"), "P_RELOC": ("Relocation", "易地搬迁"),
        "P_RESIL": ("Disaster resilience", "防灾减灾")},
    "project_type": {
        "industry": ("Industry", "产业扶贫"), "employment": ("Employment", "就业扶贫"),
        "relocation": ("Relocation", "易地扶贫搬迁"), "infrastructure_road": ("Roads", "道路建设"),
        "infrastructure_water": ("Drinking water", "饮水工程"),
        "infrastructure_power_broadband": ("Power and broadband", "电力与宽带"),
        "housing_renovation": ("Housing renovation", "危房改造"), "education": ("Education", "教育扶贫"),
        "health": ("Health", "健康扶贫"), "social_security": ("Social security", "社会保障兜底"),
        "ecological_compensation": ("Ecological compensation", "生态扶贫"),
        "photovoltaic": ("Photovoltaic", "光伏扶贫"),
        "ecommerce": ("E-commerce", "电商扶贫"), "tourism": ("Rural tourism", "乡村旅游扶贫"),
        "microfinance": ("Microcredit", "小额信贷"), "asset_income": ("Cooperative dividends", "资产收益"),
        "land_transfer": ("Land transfer", "土地流转"), "skills_training": ("Skills training", "技能培训")},
    "project_status": {
        "planned": ("Planned", "规划中"), "under_construction": ("Under construction", "在建"),
        "operating": ("Operating", "运营中"), "completed": ("Completed", "已完工"),
        "cancelled": ("Cancelled", "已取消")},
    "facility_class": {
        "school_primary": ("Primary school", "小学"), "school_junior": ("Junior secondary school", "初中"),
        "clinic": ("Village clinic", "村卫生室"), "hospital": ("Hospital", "医院"), "market": ("Market", "集贸市场"),
        "bank": ("Bank", "银行网点"), "bus_stop": ("Bus stop", "公交站"), "water_plant": ("Water plant", "水厂"),
        "township_government": ("Township government", "乡镇政府")},
    "admin_level": {
        "0": ("Country", "国家"), "1": ("Province", "省"), "2": ("Prefecture", "市"), "3": ("County", "县"),
        "4": ("Township", "乡镇"), "5": ("Village", "村")},
}
