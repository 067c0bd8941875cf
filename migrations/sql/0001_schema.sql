-- tpa-gis schema, revision 0001. Frozen: later changes go into new revisions.
-- Storage CRS is EPSG:4326; every region names a metric CRS for analysis.
-- Identifiers of people and households are pseudonyms (HMAC-SHA256 hex); no names, no ID numbers.

CREATE EXTENSION IF NOT EXISTS postgis;

-- ---------------------------------------------------------------- code lists (DOMAIN.md §1–2)
CREATE TYPE cause AS ENUM ('illness', 'disability', 'schooling', 'disaster', 'lack_land', 'lack_water',
  'lack_skills', 'lack_labour', 'lack_capital', 'poor_transport', 'lack_motivation', 'other');
CREATE TYPE need_code AS ENUM ('L_FOOD', 'L_CLOTH', 'L_EDU', 'L_HEALTH', 'L_HOUSE', 'L_WATER',
  'P_SKILL', 'P_JOB', 'P_CAPITAL', 'P_LAND', 'P_IRRIG', 'P_ROAD', 'P_MARKET', 'P_INDUSTRY', 'P_MOTIV',
  'P_RELOC', 'P_RESIL');
CREATE TYPE project_type AS ENUM ('industry', 'employment', 'relocation', 'infrastructure_road',
  'infrastructure_water', 'infrastructure_power_broadband', 'housing_renovation', 'education', 'health',
  'social_security', 'ecological_compensation', 'photovoltaic', 'ecommerce', 'tourism', 'microfinance',
  'asset_income', 'land_transfer', 'skills_training');
CREATE TYPE project_status AS ENUM ('planned', 'under_construction', 'operating', 'completed', 'cancelled');
CREATE TYPE facility_class AS ENUM ('school_primary', 'school_junior', 'clinic', 'hospital', 'market', 'bank',
  'bus_stop', 'water_plant', 'township_government');
CREATE TYPE id_standard AS ENUM ('national', 'provincial', 'municipal');
CREATE TYPE household_type AS ENUM ('general', 'dibao', 'tekun');
CREATE TYPE household_status AS ENUM ('poor', 'exited', 'returned', 'monitored');
CREATE TYPE safety_grade AS ENUM ('A', 'B', 'C', 'D');
CREATE TYPE toilet_type AS ENUM ('flush', 'dry', 'none');
CREATE TYPE cooking_fuel AS ENUM ('electricity', 'gas', 'biogas', 'coal', 'firewood', 'straw', 'dung', 'other');
CREATE TYPE access_road AS ENUM ('dirt', 'gravel', 'cement', 'asphalt');
CREATE TYPE relation AS ENUM ('head', 'spouse', 'child', 'child_in_law', 'grandchild', 'parent', 'sibling', 'other');
CREATE TYPE sex AS ENUM ('male', 'female');
CREATE TYPE education_level AS ENUM ('illiterate', 'primary', 'junior', 'senior', 'tertiary');
CREATE TYPE school_stage AS ENUM ('preschool', 'primary', 'junior', 'senior', 'vocational', 'tertiary', 'none');
CREATE TYPE health_status AS ENUM ('healthy', 'chronic', 'major_illness', 'disabled');
CREATE TYPE labour_status AS ENUM ('ordinary', 'skilled', 'weak', 'lost', 'none');
CREATE TYPE indicator_system AS ENUM ('living', 'production', 'context');
CREATE TYPE indicator_direction AS ENUM ('+', '-');
CREATE TYPE unit_type AS ENUM ('h3', 'admin');
CREATE TYPE run_status AS ENUM ('accepted', 'running', 'successful', 'failed', 'dismissed');
CREATE TYPE api_role AS ENUM ('analyst', 'admin');

-- ---------------------------------------------------------------- regions
CREATE TABLE region (
  region_id      text PRIMARY KEY CHECK (region_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  name           text NOT NULL CHECK (length(btrim(name)) > 0),
  country        char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),        -- ISO 3166-1 alpha-2
  code_system    text NOT NULL CHECK (length(btrim(code_system)) > 0),  -- e.g. 'GB/T 2260 + NBS', 'OCHA P-code'
  analysis_crs   integer NOT NULL CHECK (analysis_crs > 0),             -- EPSG code of a metric CRS
  poverty_line   numeric(14, 2) NOT NULL CHECK (poverty_line > 0),      -- per person per year, in currency
  currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),      -- ISO 4217
  poverty_line_note text,                                               -- price basis, PPP vintage, source
  default_year   integer CHECK (default_year BETWEEN 1900 AND 2200),
  description    text,
  attribution    text,
  metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at     timestamptz NOT NULL DEFAULT now()
);
-- A metric CRS must exist in PostGIS's catalogue.
CREATE FUNCTION tpa_check_region_crs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM spatial_ref_sys WHERE srid = NEW.analysis_crs) THEN
    RAISE EXCEPTION 'analysis_crs EPSG:% is unknown to PostGIS', NEW.analysis_crs
      USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = 'region_analysis_crs_known';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER region_crs BEFORE INSERT OR UPDATE OF analysis_crs ON region
  FOR EACH ROW EXECUTE FUNCTION tpa_check_region_crs();

-- ---------------------------------------------------------------- administrative hierarchy
CREATE TABLE admin_unit (
  code         text PRIMARY KEY CHECK (code ~ '^[A-Za-z0-9._-]{1,64}$'),
  region_id    text NOT NULL REFERENCES region ON DELETE CASCADE,
  level        smallint NOT NULL CHECK (level BETWEEN 0 AND 5),  -- 0 country … 5 village
  parent_code  text REFERENCES admin_unit (code) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE,
  name         text NOT NULL CHECK (length(btrim(name)) > 0),
  name_en      text,
  geom         geometry(MultiPolygon, 4326) CHECK (geom IS NULL OR (ST_IsValid(geom) AND NOT ST_IsEmpty(geom))),
  properties   jsonb NOT NULL DEFAULT '{}'::jsonb,
  valid_from   date NOT NULL DEFAULT DATE '1900-01-01',
  valid_to     date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source       text NOT NULL,
  CONSTRAINT admin_unit_country_is_root CHECK (level > 0 OR parent_code IS NULL)
);
CREATE INDEX admin_unit_geom_gist ON admin_unit USING gist (geom);
CREATE INDEX admin_unit_parent_idx ON admin_unit (parent_code);
CREATE INDEX admin_unit_region_level_idx ON admin_unit (region_id, level);

-- A unit's parent sits at a higher level (smaller number).
CREATE FUNCTION tpa_check_admin_parent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE parent_level smallint;
BEGIN
  IF NEW.parent_code IS NOT NULL THEN
    SELECT level INTO parent_level FROM admin_unit WHERE code = NEW.parent_code;
    IF FOUND AND parent_level >= NEW.level THEN
      RAISE EXCEPTION 'admin unit % (level %) cannot have parent % at level %',
        NEW.code, NEW.level, NEW.parent_code, parent_level
        USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = 'admin_unit_parent_level';
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER admin_unit_parent BEFORE INSERT OR UPDATE OF parent_code, level ON admin_unit
  FOR EACH ROW EXECUTE FUNCTION tpa_check_admin_parent();

-- Rows that point at an admin unit of a given level (TG_ARGV: column, level).
CREATE FUNCTION tpa_check_admin_level() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE ref_code text; ref_level smallint;
BEGIN
  ref_code := to_jsonb(NEW) ->> TG_ARGV[0];
  IF ref_code IS NULL THEN RETURN NEW; END IF;
  SELECT level INTO ref_level FROM admin_unit WHERE code = ref_code;
  IF FOUND AND ref_level <> TG_ARGV[1]::smallint THEN
    RAISE EXCEPTION '%.% = % is an admin unit of level %, expected level %',
      TG_TABLE_NAME, TG_ARGV[0], ref_code, ref_level, TG_ARGV[1]
      USING ERRCODE = 'check_violation', HINT = 'tpa-gis data rule', CONSTRAINT = TG_TABLE_NAME || '_' || TG_ARGV[0] || '_level';
  END IF;
  RETURN NEW;
END $$;

-- ---------------------------------------------------------------- villages (poverty-village form)
CREATE TABLE village (
  code                    text PRIMARY KEY REFERENCES admin_unit (code) ON DELETE CASCADE,
  region_id               text NOT NULL REFERENCES region ON DELETE CASCADE,
  is_poverty_village      boolean NOT NULL DEFAULT false,
  households              integer NOT NULL CHECK (households >= 0),
  population              integer NOT NULL CONSTRAINT village_population_ge_households
                          CHECK (population >= households),
  labour_force            integer CHECK (labour_force BETWEEN 0 AND population),
  migrant_workers         integer CHECK (migrant_workers >= 0 AND migrant_workers <= labour_force),
  arable_mu               numeric(12, 1) CHECK (arable_mu >= 0),
  km_to_township          numeric(8, 2) CHECK (km_to_township >= 0),
  paved_road              boolean,
  bus_service             boolean,
  grid_power              boolean,
  broadband               boolean,
  clinic                  boolean,
  licensed_doctors        integer CHECK (licensed_doctors >= 0),
  collective_income       numeric(14, 2) CHECK (collective_income >= 0),
  unsafe_water_households integer CHECK (unsafe_water_households BETWEEN 0 AND households),
  geom_point              geometry(Point, 4326) NOT NULL CHECK (ST_IsValid(geom_point)),
  valid_from              date NOT NULL,
  valid_to                date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source                  text NOT NULL
);
CREATE INDEX village_geom_gist ON village USING gist (geom_point);
CREATE INDEX village_region_idx ON village (region_id);
CREATE TRIGGER village_level BEFORE INSERT OR UPDATE OF code ON village
  FOR EACH ROW EXECUTE FUNCTION tpa_check_admin_level('code', '5');

-- ---------------------------------------------------------------- households and persons (restricted)
CREATE TABLE household (
  hh_id              text PRIMARY KEY CHECK (hh_id ~ '^[0-9a-f]{64}$'),  -- HMAC-SHA256 pseudonym
  region_id          text NOT NULL REFERENCES region ON DELETE CASCADE,
  village_code       text NOT NULL REFERENCES admin_unit (code) ON DELETE CASCADE,
  geom               geometry(Point, 4326) CHECK (geom IS NULL OR ST_IsValid(geom)),
  id_standard        id_standard NOT NULL DEFAULT 'national',
  hh_type            household_type NOT NULL,
  main_cause         cause NOT NULL,
  other_causes       cause[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(other_causes) <= 2 AND array_position(other_causes, NULL) IS NULL),
  status             household_status NOT NULL,
  year_identified    smallint NOT NULL CHECK (year_identified BETWEEN 1980 AND 2200),
  year_exited        smallint CONSTRAINT household_exit_after_identification CHECK (year_exited >= year_identified),
  size               smallint NOT NULL CHECK (size BETWEEN 1 AND 30),
  income_wage        numeric(12, 2) NOT NULL DEFAULT 0 CHECK (income_wage >= 0),
  income_business    numeric(12, 2) NOT NULL DEFAULT 0,
  income_property    numeric(12, 2) NOT NULL DEFAULT 0 CHECK (income_property >= 0),
  income_transfer    numeric(12, 2) NOT NULL DEFAULT 0 CHECK (income_transfer >= 0),
  expense_production numeric(12, 2) NOT NULL DEFAULT 0 CHECK (expense_production >= 0),
  net_income_pc      numeric(12, 2) NOT NULL,
  house_area_m2      numeric(8, 1) CHECK (house_area_m2 >= 0),
  house_structure    text CHECK (house_structure IN ('reinforced_concrete', 'brick_concrete', 'brick_wood',
                                                      'earth_wood', 'other')),
  house_safety_grade safety_grade,
  water_safe         boolean,
  water_difficulty   boolean,
  toilet             toilet_type,
  cooking_fuel       cooking_fuel,
  electricity        boolean,
  access_road        access_road,
  km_to_main_road    numeric(8, 2) CHECK (km_to_main_road >= 0),
  arable_mu          numeric(10, 2) CHECK (arable_mu >= 0),
  irrigated_mu       numeric(10, 2) CONSTRAINT household_irrigated_within_arable
                       CHECK (irrigated_mu >= 0 AND irrigated_mu <= arable_mu),
  forest_mu          numeric(10, 2) CHECK (forest_mu >= 0),
  coop_member        boolean NOT NULL DEFAULT false,
  microcredit        boolean NOT NULL DEFAULT false,
  food_insecure      boolean NOT NULL DEFAULT false,  -- self-reported (L_FOOD)
  clothing_insecure  boolean NOT NULL DEFAULT false,  -- survey flag (L_CLOTH)
  family_doctor      boolean NOT NULL DEFAULT false,  -- contracted family doctor (L_HEALTH)
  reported_needs     need_code[] NOT NULL DEFAULT '{}', -- needs recorded on the registry form
  valid_from         date NOT NULL,
  valid_to           date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source             text NOT NULL,
  CONSTRAINT household_main_not_other CHECK (NOT (main_cause = ANY (other_causes))),
  CONSTRAINT household_exit_year CHECK (status <> 'exited' OR year_exited IS NOT NULL)
);
CREATE INDEX household_geom_gist ON household USING gist (geom);
CREATE INDEX household_village_idx ON household (village_code);
CREATE INDEX household_region_status_idx ON household (region_id, status);
CREATE TRIGGER household_village_level BEFORE INSERT OR UPDATE OF village_code ON household
  FOR EACH ROW EXECUTE FUNCTION tpa_check_admin_level('village_code', '5');

CREATE TABLE person (
  person_id        text PRIMARY KEY CHECK (person_id ~ '^[0-9a-f]{64}$'),
  hh_id            text NOT NULL REFERENCES household ON DELETE CASCADE,
  region_id        text NOT NULL REFERENCES region ON DELETE CASCADE,
  relation         relation NOT NULL,
  sex              sex NOT NULL,
  birth_year       smallint NOT NULL CHECK (birth_year BETWEEN 1880 AND 2200),
  ethnicity        text,
  education        education_level,
  in_school        school_stage NOT NULL DEFAULT 'none',
  health           health_status NOT NULL DEFAULT 'healthy',
  labour           labour_status NOT NULL,
  migrant_months   smallint NOT NULL DEFAULT 0 CHECK (migrant_months BETWEEN 0 AND 12),
  med_insured      boolean NOT NULL,
  pension_insured  boolean NOT NULL,
  disability_grade smallint CHECK (disability_grade BETWEEN 1 AND 4),
  valid_from       date NOT NULL,
  valid_to         date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source           text NOT NULL
);
CREATE INDEX person_hh_idx ON person (hh_id);

-- ---------------------------------------------------------------- projects and facilities
CREATE TABLE project (
  project_id        text PRIMARY KEY CHECK (project_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  region_id         text NOT NULL REFERENCES region ON DELETE CASCADE,
  name              text NOT NULL CHECK (length(btrim(name)) > 0),
  type              project_type NOT NULL,
  subtype           text,
  geom              geometry(Geometry, 4326) NOT NULL CHECK (ST_IsValid(geom) AND NOT ST_IsEmpty(geom)),
  admin_code        text REFERENCES admin_unit (code) ON DELETE CASCADE,
  start_date        date,
  end_date          date CHECK (end_date IS NULL OR start_date IS NULL OR end_date >= start_date),
  status            project_status NOT NULL,
  budget_total      numeric(16, 2) CHECK (budget_total >= 0),
  budget_by_level   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(budget_by_level) = 'object'),
  capacity          integer CHECK (capacity >= 0),
  service_radius_km numeric(8, 2) CHECK (service_radius_km > 0),
  addresses_needs   need_code[] NOT NULL DEFAULT '{}',
  valid_from        date NOT NULL,
  valid_to          date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source            text NOT NULL
);
CREATE INDEX project_geom_gist ON project USING gist (geom);
CREATE INDEX project_region_type_idx ON project (region_id, type);

CREATE TABLE project_beneficiary (
  project_id   text NOT NULL REFERENCES project ON DELETE CASCADE,
  hh_id        text NOT NULL REFERENCES household ON DELETE CASCADE,
  year         smallint NOT NULL CHECK (year BETWEEN 1980 AND 2200),
  benefit_type text NOT NULL,
  amount       numeric(12, 2) CHECK (amount >= 0),
  PRIMARY KEY (project_id, hh_id, year, benefit_type)
);
CREATE INDEX project_beneficiary_hh_idx ON project_beneficiary (hh_id);

CREATE TABLE facility (
  fac_id      text PRIMARY KEY CHECK (fac_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  region_id   text NOT NULL REFERENCES region ON DELETE CASCADE,
  class       facility_class NOT NULL,
  name        text,
  capacity    integer CHECK (capacity >= 0),
  admin_code  text REFERENCES admin_unit (code) ON DELETE CASCADE,
  geom        geometry(Point, 4326) NOT NULL CHECK (ST_IsValid(geom)),
  valid_from  date NOT NULL,
  valid_to    date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source      text NOT NULL
);
CREATE INDEX facility_geom_gist ON facility USING gist (geom);
CREATE INDEX facility_region_class_idx ON facility (region_id, class);

-- ---------------------------------------------------------------- indicators and the cause → need → project map
CREATE TABLE indicator_def (
  code        text PRIMARY KEY CHECK (code ~ '^[A-Za-z][A-Za-z0-9_]{0,63}$'),
  system      indicator_system NOT NULL,
  direction   indicator_direction NOT NULL,
  unit        text NOT NULL,
  level       text NOT NULL CHECK (level IN ('household', 'village', 'unit')),
  source      text NOT NULL,
  formula     text NOT NULL,
  description text NOT NULL
);

CREATE TABLE cause_need_project (
  id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  region_id    text REFERENCES region ON DELETE CASCADE,  -- NULL: the default for every region
  cause        cause NOT NULL,
  need         need_code,
  project_type project_type,
  note         text,
  source       text NOT NULL,
  CONSTRAINT cause_need_project_one_target CHECK ((need IS NULL) <> (project_type IS NULL))
);
-- PostgreSQL 15: NULLs compare equal here, so the default rows (region_id NULL) are unique too.
ALTER TABLE cause_need_project ADD CONSTRAINT cause_need_project_uniq
  UNIQUE NULLS NOT DISTINCT (region_id, cause, need, project_type);

-- ---------------------------------------------------------------- telecom aggregates (only aggregates, DOMAIN §5)
CREATE TABLE h3_cell (
  h3_index   text PRIMARY KEY CHECK (h3_index ~ '^[0-9a-f]{15}$'),
  res        smallint NOT NULL CHECK (res BETWEEN 0 AND 15),
  parent     text,
  geom       geometry(Polygon, 4326) NOT NULL CHECK (ST_IsValid(geom))
);
CREATE INDEX h3_cell_geom_gist ON h3_cell USING gist (geom);

CREATE TABLE telecom_agg (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  region_id     text NOT NULL REFERENCES region ON DELETE CASCADE,
  unit_type     unit_type NOT NULL,
  unit_id       text NOT NULL,
  h3_res        smallint CHECK (h3_res BETWEEN 0 AND 15),
  period        daterange NOT NULL CHECK (NOT isempty(period) AND NOT lower_inf(period) AND NOT upper_inf(period)),
  indicator     text NOT NULL REFERENCES indicator_def (code),
  value         double precision,
  n_subscribers integer CHECK (n_subscribers >= 0),
  suppressed    boolean NOT NULL,
  valid_from    date NOT NULL,
  valid_to      date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source        text NOT NULL,
  -- FlowKit's rule: nothing is published unless more than 15 distinct subscribers contribute.
  CONSTRAINT telecom_agg_min_count CHECK (
    (suppressed AND value IS NULL) OR (NOT suppressed AND n_subscribers > 15 AND value IS NOT NULL)),
  CONSTRAINT telecom_agg_h3_res CHECK ((unit_type = 'h3') = (h3_res IS NOT NULL)),
  CONSTRAINT telecom_agg_uniq UNIQUE (region_id, unit_type, unit_id, period, indicator)
);
CREATE INDEX telecom_agg_unit_idx ON telecom_agg (unit_id);

CREATE TABLE telecom_od (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  region_id   text NOT NULL REFERENCES region ON DELETE CASCADE,
  unit_type   unit_type NOT NULL,
  origin_unit text NOT NULL,
  dest_unit   text NOT NULL,
  period      daterange NOT NULL CHECK (NOT isempty(period) AND NOT lower_inf(period) AND NOT upper_inf(period)),
  count       integer,
  suppressed  boolean NOT NULL,
  valid_from  date NOT NULL,
  valid_to    date CHECK (valid_to IS NULL OR valid_to > valid_from),
  source      text NOT NULL,
  CONSTRAINT telecom_od_min_count CHECK ((suppressed AND count IS NULL) OR (NOT suppressed AND count > 15)),
  CONSTRAINT telecom_od_uniq UNIQUE (region_id, unit_type, origin_unit, dest_unit, period)
);

-- ---------------------------------------------------------------- jobs and access
CREATE TABLE analysis_run (
  run_id       uuid PRIMARY KEY,
  region_id    text REFERENCES region ON DELETE CASCADE,
  kind         text NOT NULL,
  params       jsonb NOT NULL DEFAULT '{}'::jsonb,
  input_hash   text,
  status       run_status NOT NULL DEFAULT 'accepted',
  message      text,
  progress     smallint CHECK (progress BETWEEN 0 AND 100),
  created      timestamptz NOT NULL DEFAULT now(),
  started      timestamptz,
  finished     timestamptz CHECK (finished IS NULL OR started IS NULL OR finished >= started),
  result_table text CHECK (result_table IS NULL OR result_table ~ '^[a-z_][a-z0-9_]{0,62}$'),
  result       jsonb
);
CREATE INDEX analysis_run_kind_idx ON analysis_run (kind, created DESC);

CREATE TABLE api_key (
  key_id      uuid PRIMARY KEY,
  prefix      text NOT NULL UNIQUE CHECK (prefix ~ '^[A-Za-z0-9_-]{8,16}$'),
  key_hash    text NOT NULL CHECK (key_hash ~ '^[0-9a-f]{64}$'),  -- SHA-256 of the whole key
  role        api_role NOT NULL,
  name        text NOT NULL,
  created     timestamptz NOT NULL DEFAULT now(),
  expires     timestamptz,
  revoked     timestamptz,
  last_used   timestamptz
);
