"""The mapping file: how a region's own columns and labels become tpa-gis fields and codes.

A mapping is YAML (see ``examples/mappings/`` and the README for complete examples)::

    entity: households              # optional; checked against the command
    year: 2019                      # registry year: rows are valid from 1 January of it
    source_label: "County registry 2019"
    source: {encoding: gb18030, sheet: 户表, header_row: 1, layer: ...}
    geometry: {x: 经度, y: 纬度, crs: gcj02}     # or {wkt: WKT}; vector files carry their own
    admin_levels: {3: County, 4: Township, 5: Village}
    fields:
      hh_id: {from: 户主身份证号, pseudonymize: true}
      village_code: 行政村代码
      main_cause: {from: 主要致贫原因, values: {因病: illness, 因残: disability}}
      other_causes: {from: 其他致贫原因, split: "、", values: {...}}
      budget_total: {from: 总投资（万元）, scale: 10000}
      code: {from: AreaKey, template: "US{value}"}
      level: {value: 3}
      properties: {object: {pct_poverty: PctPov}}

A field given as a plain string names the source column. Without a mapping, source columns whose names equal
field names (case-insensitive) are taken as they are, so files exported by ``tpa export region`` import back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import InvalidParameter

_MANAGED = {"region_id", "valid_from", "valid_to", "source"}


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | list[str] | None = Field(default=None, alias="from", description="Source column(s)")
    value: Any = Field(default=None, description="A constant for every row")
    values: dict[str, Any] | None = Field(default=None, description="Value map: source label → code")
    split: str | None = Field(default=None, description="Separator of several values in one cell")
    scale: float | None = Field(default=None, description="Multiply numbers by this (e.g. 10000 for 万元)")
    pseudonymize: bool = Field(default=False, description="Replace by HMAC-SHA256(TPA_PSEUDONYM_KEY, value)")
    lookup: str | None = Field(default=None, description="'name': the cell names an admin unit of the region")
    default: Any = Field(default=None, description="Used when the cell is empty")
    object: dict[str, str] | None = Field(default=None, description="JSON object field: key → source column")
    template: str | None = Field(default=None, description="Text around the value, e.g. 'US{value}'")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{value}" not in v:
            raise ValueError("a template contains {value}")
        return v

    @field_validator("lookup")
    @classmethod
    def _lookup(cls, v: str | None) -> str | None:
        if v not in (None, "name"):
            raise ValueError("lookup must be 'name'")
        return v

    @field_validator("values")
    @classmethod
    def _no_empty_codes(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        empty = [k for k, code in (v or {}).items() if code is None or code == ""]
        if empty:
            raise ValueError(f"value map entries without a code: {', '.join(map(str, empty))}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [self.from_ is not None, self.value is not None, self.object is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of 'from', 'value' or 'object'")
        if self.scale is not None and self.scale <= 0:
            raise ValueError("scale must be positive")
        return self

    @property
    def columns(self) -> list[str]:
        if self.object is not None:
            return list(self.object.values())
        if self.from_ is None:
            return []
        return [self.from_] if isinstance(self.from_, str) else list(self.from_)


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoding: str | None = None
    layer: str | None = None
    sheet: str | None = None
    header_row: int = Field(default=1, ge=1)
    delimiter: str | None = None


class GeometrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: str | None = None
    y: str | None = None
    wkt: str | None = None
    crs: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> GeometrySpec:
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y columns")
        if self.wkt is not None and self.x is not None:
            raise ValueError("give x/y columns or a wkt column, not both")
        return self


class Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str | None = None
    year: int | None = Field(default=None, ge=1900, le=2200)
    source_label: str | None = None
    source: SourceSpec = Field(default_factory=SourceSpec)
    geometry: GeometrySpec = Field(default_factory=GeometrySpec)
    admin_levels: dict[int, str] | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _short_forms(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: ({"from": s} if isinstance(s, str | list) else s) for k, s in v.items()}

    @field_validator("admin_levels")
    @classmethod
    def _levels(cls, v: dict[int, str] | None) -> dict[int, str] | None:
        if v and any(not 0 <= k <= 5 for k in v):
            raise ValueError("admin levels are 0 (country) … 5 (village)")
        return v


@dataclass
class LoadedMapping:
    mapping: Mapping
    sha256: str | None


def load_mapping(path: Path | None) -> LoadedMapping:
    if path is None:
        return LoadedMapping(Mapping(), None)
    path = Path(path)
    if not path.exists():
        raise InvalidParameter(f"no such mapping file: {path}")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8-sig")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"{path.name} is not valid UTF-8 YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidParameter(f"{path.name}: a mapping file is a YAML object")
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidParameter(f"{path.name}: {problems}") from None
    return LoadedMapping(mapping, hashlib.sha256(raw).hexdigest())


def resolve_fields(mapping: Mapping, columns: list[str], allowed: list[str]) -> dict[str, FieldSpec]:
    """The field specs to apply: the mapping's, or same-named columns when the mapping lists none."""
    unknown = sorted(set(mapping.fields) - set(allowed))
    if unknown:
        raise InvalidParameter(f"unknown field(s) in the mapping: {', '.join(unknown)} "
                               f"(fields of this entity: {', '.join(allowed)})")
    fields = dict(mapping.fields)
    if not fields:
        by_lower = {c.lower(): c for c in columns}
        fields = {f: FieldSpec(**{"from": by_lower[f.lower()]}) for f in allowed if f.lower() in by_lower}
    missing = sorted({c for spec in fields.values() for c in spec.columns} - set(columns))
    if missing:
        raise InvalidParameter(f"column(s) not in the file: {', '.join(missing)} "
                               f"(the file has: {', '.join(columns)})")
    return fields


# ------------------------------------------------------------------------------------------------ suggestion
_LON = re.compile(r"^(lon|lng|long|longitude|x|经度|东经)$", re.I)
_LAT = re.compile(r"^(lat|latitude|y|纬度|北纬)$", re.I)
_WKT = re.compile(r"^(wkt|geom|geometry|the_geom|shape)$", re.I)
_PERSONAL = re.compile(r"(姓名|名字|身份证|证件|电话|手机|name_of|full.?name|person.?name|\bphone|"
                       r"national.?id|id.?card|passport|户主$)", re.I)

# Column names of Chinese registry, project and village exports → tpa-gis fields.
LABELS: dict[str, str] = {
    "户编号": "hh_id", "户主身份证号": "hh_id", "户主证件号码": "hh_id", "身份证号": "person_id",
    "证件号码": "person_id", "行政村代码": "village_code", "村代码": "village_code", "所在村": "village_code",
    "识别标准": "id_standard", "贫困户属性": "hh_type", "户属性": "hh_type", "主要致贫原因": "main_cause",
    "致贫原因": "main_cause", "其他致贫原因": "other_causes", "贫困户状态": "status", "脱贫状态": "status",
    "识别年度": "year_identified", "脱贫年度": "year_exited", "家庭人口": "size", "家庭人口数": "size",
    "人口数": "size", "工资性收入": "income_wage", "生产经营性收入": "income_business",
    "财产性收入": "income_property", "转移性收入": "income_transfer", "生产经营性支出": "expense_production",
    "医疗支出": "expense_medical", "自付医疗费用": "expense_medical", "教育支出": "expense_education",
    "灾害损失": "loss_disaster",
    "人均纯收入": "net_income_pc", "住房面积": "house_area_m2", "住房安全等级": "house_safety_grade",
    "危房等级": "house_safety_grade", "饮水安全": "water_safe", "饮水困难": "water_difficulty",
    "厕所": "toilet", "卫生厕所": "toilet", "燃料类型": "cooking_fuel", "通生活用电": "electricity",
    "入户路类型": "access_road", "距主干路距离": "km_to_main_road", "耕地面积": "arable_mu",
    "有效灌溉面积": "irrigated_mu", "林地面积": "forest_mu", "加入合作社": "coop_member",
    "是否加入农民专业合作社": "coop_member", "小额信贷": "microcredit", "与户主关系": "relation",
    "性别": "sex", "出生年份": "birth_year", "民族": "ethnicity", "文化程度": "education", "在校生状况": "in_school",
    "健康状况": "health", "劳动技能": "labour", "务工时间": "migrant_months", "参加城乡居民基本医疗保险": "med_insured",
    "参加城乡居民基本养老保险": "pension_insured", "残疾等级": "disability_grade",
    "项目编号": "project_id", "项目名称": "name", "项目类型": "type", "项目类别": "type", "建设状态": "status",
    "开工日期": "start_date", "完工日期": "end_date", "总投资": "budget_total", "受益户数": "capacity",
    "服务半径": "service_radius_km", "村名": "name", "村名称": "name", "乡镇代码": "parent_code",
    "是否贫困村": "is_poverty_village", "户数": "households", "总人口": "population", "劳动力": "labour_force",
    "外出务工人数": "migrant_workers", "距乡镇距离": "km_to_township", "通硬化路": "paved_road",
    "通客车": "bus_service",
    "通动力电": "grid_power", "通宽带": "broadband", "卫生室": "clinic", "执业医师": "licensed_doctors",
    "村集体经济收入": "collective_income", "饮水不安全户数": "unsafe_water_households",
    "名称": "name", "代码": "code", "区划代码": "code", "级别": "level", "上级代码": "parent_code",
}

# Chinese labels of the code lists (registry forms, docs/methodology.md#codes) → codes.
VALUE_LABELS: dict[str, dict[str, str]] = {
    "cause": {"因病": "illness", "因残": "disability", "因学": "schooling", "因灾": "disaster", "缺土地": "lack_land",
              "缺水": "lack_water", "缺技术": "lack_skills", "缺劳力": "lack_labour", "缺劳动力": "lack_labour",
              "缺资金": "lack_capital", "交通条件落后": "poor_transport", "交通落后": "poor_transport",
              "自身发展动力不足": "lack_motivation", "其它": "other", "其他": "other"},
    "household_type": {"一般贫困户": "general", "一般户": "general", "低保贫困户": "dibao", "低保户": "dibao",
                       "五保贫困户": "tekun", "五保户": "tekun", "特困供养户": "tekun", "特困户": "tekun"},
    "id_standard": {"国家标准": "national", "国标": "national", "省定标准": "provincial", "省标": "provincial",
                    "市定标准": "municipal", "市标": "municipal"},
    "household_status": {"未脱贫": "poor", "贫困": "poor", "已脱贫": "exited", "脱贫": "exited", "返贫": "returned",
                         "监测户": "monitored", "边缘易致贫户": "monitored", "脱贫不稳定户": "monitored"},
    "safety_grade": {"A级": "A", "B级": "B", "C级": "C", "D级": "D"},
    "toilet_type": {"水冲式": "flush", "卫生厕所": "flush", "旱厕": "dry", "无": "none", "无厕所": "none"},
    "access_road": {"泥土路": "dirt", "土路": "dirt", "砂石路": "gravel", "水泥路": "cement", "沥青路": "asphalt",
                    "柏油路": "asphalt"},
    "sex": {"男": "male", "女": "female"},
    "relation": {"户主": "head", "配偶": "spouse", "之子": "child", "之女": "child", "子女": "child",
                 "之儿媳": "child_in_law", "之女婿": "child_in_law", "之孙子": "grandchild", "之孙女": "grandchild",
                 "之父": "parent", "之母": "parent", "兄弟姐妹": "sibling", "其他": "other"},
    "education_level": {"文盲或半文盲": "illiterate", "文盲": "illiterate", "小学": "primary", "初中": "junior",
                        "高中": "senior", "中专": "senior", "大专及以上": "tertiary", "大专": "tertiary",
                        "本科及以上": "tertiary"},
    "health_status": {"健康": "healthy", "长期慢性病": "chronic", "慢性病": "chronic", "患有大病": "major_illness",
                      "大病": "major_illness", "残疾": "disabled"},
    "labour_status": {"普通劳动力": "ordinary", "技能劳动力": "skilled", "弱劳动力或半劳动力": "weak",
                      "弱劳动力": "weak", "丧失劳动力": "lost", "无劳动力": "none"},
    "project_type": {"产业扶贫": "industry", "产业": "industry", "就业扶贫": "employment", "易地扶贫搬迁": "relocation",
                     "道路": "infrastructure_road", "饮水": "infrastructure_water", "危房改造": "housing_renovation",
                     "教育扶贫": "education", "健康扶贫": "health", "光伏扶贫": "photovoltaic", "电商扶贫": "ecommerce",
                     "乡村旅游": "tourism", "小额信贷": "microfinance", "资产收益": "asset_income",
                     "土地流转": "land_transfer", "技能培训": "skills_training", "生态扶贫": "ecological_compensation"},
}


# Administrative codes and names of common boundary files: P-codes (OCHA), GEOIDs and FIPS codes (US Census),
# NUTS and GB/T 2260 codes; preferred in this order when several columns hold unique values.
_CODE = re.compile(r"^(adm\d_?pcode|pcode|.*_pcode|code|.*_code|geoid|geo_id|fips|fipsno|fips_code|areakey|"
                   r"nuts_id|gid_\d|shapeid|区划代码|代码)$", re.I)
_ID = re.compile(r"^(id|.*_id|.*id)$", re.I)
_NAME = re.compile(r"^(name|.*_name|nom|nombre|nome|name_\d|adm\d_(en|name)|名称|村名|村名称)$", re.I)
_LEVEL = re.compile(r"^(level|adm_?level|admin_?level|admin_level|级别)$", re.I)
_PARENT = re.compile(r"^(parent|parent_?code|parent_?id|上级代码|乡镇代码)$", re.I)


@dataclass
class SuggestContext:
    """What the region tells a suggestion: its country (a prefix keeps numeric codes unique across regions) and
    the names of its administrative levels."""

    country: str | None = None
    admin_levels: dict[int, str] | None = None


def _snake(name: str) -> str:
    out = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    out = re.sub(r"[^0-9A-Za-z_]+", "_", out).strip("_").lower()
    return out or "value"


def _unique(col: str, sample: list[dict[str, Any]]) -> bool:
    values = [str(r.get(col)).strip() for r in sample if r.get(col) not in (None, "")]
    return bool(values) and len(values) == len(sample) and len(set(values)) == len(values)


def _code_column(columns: list[str], sample: list[dict[str, Any]], taken: set[str]) -> str | None:
    """The column most likely to hold each unit's code: a code-like name with unique values (FIPS, P-code, GEOID …),
    else an id-like one with unique values."""
    free = [c for c in columns if c not in taken]
    for pattern in (_CODE, _ID):
        hits = [c for c in free if pattern.match(c) and _unique(c, sample)]
        if hits:
            return hits[0]
    return None


def _admin_fields(entity: str, columns: list[str], sample: list[dict[str, Any]], allowed: dict[str, str],
                  taken: set[str], context: SuggestContext, matched: set[str]) -> list[str]:
    """Lines for the code, name, level and parent of boundaries and villages that no column is named after (those
    in ``matched``), from the file's columns or the region; the columns used are added to ``taken``."""
    allowed = {k: v for k, v in allowed.items() if k not in matched}
    lines: list[str] = []
    level_col = next((c for c in columns if c not in taken and _LEVEL.match(c)), None)
    levels = context.admin_levels or {}
    level = 5 if entity == "villages" else max((k for k in levels if k < 5), default=3)
    level_name = levels.get(level) or {0: "Country", 1: "Province", 2: "Prefecture", 3: "County", 4: "Township",
                                        5: "Village"}[level]
    code_col = _code_column(columns, sample, taken)
    if code_col is not None and "code" in allowed:
        taken.add(code_col)
        numeric = all(str(r.get(code_col)).strip().isdigit() for r in sample if r.get(code_col) not in (None, ""))
        spec = f"from: {_q(code_col)}"
        if numeric and context.country:  # bare numbers clash across countries; codes are unique service-wide
            spec += f", template: {_q(context.country + '{value}')}"
        lines.append(f"  code: {{{spec}}}   # unique unit codes")
    name_col = next((c for c in columns if c not in taken and _NAME.match(c)), None)
    if "name" not in allowed:
        pass
    elif name_col is not None:
        taken.add(name_col)
        lines.append(f"  name: {{from: {_q(name_col)}}}")
    elif code_col is not None:
        lines.append(f"  name: {{from: {_q(code_col)}, template: {_q(level_name + ' {value}')}}}   "
                     "# no name column: named after the code")
    if "level" in allowed:
        if level_col is not None:
            taken.add(level_col)
            lines.append(f"  level: {{from: {_q(level_col)}}}")
        else:
            lines.append(f"  level: {{value: {level}}}   # {level_name}; 0 country, 1 province or state, "
                         "2 prefecture, 3 county, 4 township, 5 village")
    parent_col = next((c for c in columns if c not in taken and _PARENT.match(c)), None)
    if parent_col is not None and "parent_code" in allowed:
        taken.add(parent_col)
        lines.append(f"  parent_code: {{from: {_q(parent_col)}}}")
    return lines


def suggest_mapping(entity: str, columns: list[str], sample: list[dict[str, Any]], allowed: dict[str, str],
                    enum_types: dict[str, tuple[str, list[str]]], geometry_in_file: bool,
                    context: SuggestContext | None = None, crs_in_file: bool = True) -> str:
    """A YAML mapping for the file that imports as it is: guessed fields, value maps of the labels seen, codes,
    names and levels of administrative units, the remaining attributes kept as open properties (boundaries), and
    personal columns listed as not imported.

    ``allowed`` maps field → SQL type; ``enum_types`` maps field → (enum type, codes).
    """
    context = context or SuggestContext()
    out = [f"# Mapping suggested by `tpa import {entity} … --suggest-mapping`. Check every line, then pass it with",
           "# --mapping. Fields not listed are left at their defaults.", f"entity: {entity}",
           "# year: 2024             # the registry year (rows valid from 1 January)",
           "# source_label: \"…\"      # provenance stored with every row"]
    lower = {f.lower(): f for f in allowed}
    taken: set[str] = set()
    lines: list[str] = []
    personal: list[str] = []
    unknown: list[str] = []
    x = y = wkt = None
    if not geometry_in_file:  # a vector file's own geometry wins over coordinate columns
        x = next((c for c in columns if _LON.match(c)), None)
        y = next((c for c in columns if _LAT.match(c)), None)
        wkt = next((c for c in columns if _WKT.match(c)), None)
    geometry_cols = {c for c in (x, y, wkt) if c}
    targets: dict[str, str] = {}
    for col in columns:
        target = LABELS.get(col) or lower.get(col.lower())
        if col in geometry_cols or target is None or target not in allowed or target in targets.values():
            continue
        targets[col] = target
    if entity in ("boundaries", "villages"):
        used = set(geometry_cols) | set(targets)
        lines.extend(_admin_fields(entity, columns, sample, allowed, used, context, set(targets.values())))
        taken |= used - set(targets) - geometry_cols
    for col in columns:
        if col in geometry_cols or col in taken:
            continue
        target = targets.get(col)
        if target is None and _PERSONAL.search(col):
            personal.append(col)
            continue
        if target is None:
            unknown.append(col)
            continue
        taken.add(col)
        spec: list[str] = [f"from: {_q(col)}"]
        if target in ("hh_id", "person_id") or (entity == "persons" and target == "hh_id"):
            spec.append("pseudonymize: true")
        if target in enum_types:
            typ, codes = enum_types[target]
            cells = [str(r[col]).strip() for r in sample if r.get(col) not in (None, "")]
            if allowed[target].endswith("[]"):
                sep = next((c for c in ("、", ";", "；", ",", "，", "|") if any(c in v for v in cells)), "、")
                spec.append(f"split: {_q(sep)}")
                cells = [p.strip() for v in cells for p in v.split(sep) if p.strip()]
            labels = VALUE_LABELS.get(typ, {})
            seen = sorted({v for v in cells if v not in codes})
            if seen:  # labels without a known code are left null: the mapping is refused until filled in
                pairs = ", ".join(f"{_q(v)}: {labels.get(v, 'null')}" for v in seen[:40])
                spec.append(f"values: {{{pairs}}}")
        lines.append(f"  {target}: {{{', '.join(spec)}}}")
    if unknown and allowed.get("properties") == "jsonb":  # kept as the unit's attributes (queryable in the API)
        keys: dict[str, str] = {}
        for col in unknown:
            key = _snake(col)
            while key in keys:
                key += "_"
            keys[key] = col
        lines.append("  properties:   # the file's other columns, kept as attributes (queryable by these names)")
        lines.append("    object:")
        lines.extend(f"      {k}: {_q(c)}" for k, c in keys.items())
        unknown = []
    if x and y:
        out.append(f"geometry: {{x: {_q(x)}, y: {_q(y)}, crs: EPSG:4326}}   # or gcj02 / bd09 / EPSG:xxxx")
    elif wkt:
        out.append(f"geometry: {{wkt: {_q(wkt)}, crs: EPSG:4326}}")
    elif geometry_in_file and not crs_in_file:
        out.append("# The file declares no coordinate system: pass --source-crs EPSG:xxxx when importing, or add")
        out.append("# geometry: {crs: EPSG:xxxx}")
    if context.admin_levels is None and entity == "boundaries":
        out.append("# admin_levels: {1: State, 3: County}   # the region's names of its levels")
    out.append("fields:")
    out.extend(lines)
    out.extend(f"  # ?: {_q(c)}" for c in unknown)
    if personal:
        out.append("# Personal data NOT imported (names, ID and phone numbers are never stored; map an ID column")
        out.append("# with `pseudonymize: true` if it identifies the household or person):")
        out.extend(f"#   {_q(c)}" for c in personal)
    named = {ln.split(":", 1)[0].strip() for ln in lines}
    missing = [f for f in allowed if f not in named]
    if missing:
        out.append("# Fields without a column: " + ", ".join(missing))
    return "\n".join(out) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def managed_fields() -> set[str]:
    return set(_MANAGED)
