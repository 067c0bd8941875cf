"""The ``tpa`` command line: database migrations, the demo region, serving, OpenAPI export."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from app.settings import Settings

app = typer.Typer(help="tpa-gis: Targeted Poverty Alleviation GIS service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo region 'Tieling (demo)'.", no_args_is_help=True)
openapi_app = typer.Typer(help="The OpenAPI document.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (roles analyst and admin).", no_args_is_help=True)
layers_app = typer.Typer(help="Extra PostGIS tables published as OGC collections.", no_args_is_help=True)
results_app = typer.Typer(help="Results of executions: list, keep longer, delete the expired.",
                          no_args_is_help=True)
region_app = typer.Typer(help="Regions: create one from standard files, list, delete.", no_args_is_help=True)
export_app = typer.Typer(help="Share a region: GeoPackage of its public layers, pygeoapi configuration.",
                         no_args_is_help=True)
telecom_app = typer.Typer(help="Mobile-phone location data → privacy-safe aggregates.", no_args_is_help=True)
roads_app = typer.Typer(help="Road networks: the versions of each region's roads.", no_args_is_help=True)
monitoring_app = typer.Typer(help="Dynamic monitoring against return to poverty: rules and alerts.",
                             no_args_is_help=True)
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(roads_app, name="roads")
app.add_typer(telecom_app, name="telecom")
app.add_typer(region_app, name="region")
app.add_typer(export_app, name="export")
app.add_typer(keys_app, name="keys")
app.add_typer(layers_app, name="layers")
app.add_typer(results_app, name="results")
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(openapi_app, name="openapi")
console = Console(stderr=True)

DEFAULT_OPENAPI = Path("openapi/openapi.json")


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to keep trying while the database does not accept "
                               "connections yet (a container started beside it)"),
) -> None:
    """Migrate the database (DATABASE_URL) to REVISION. Concurrent upgrades (replicas started together) run one
    after the other; the later ones find nothing to do."""
    from alembic import command

    from app.db import alembic_config
    from app.errors import is_unavailable

    settings = Settings()
    deadline = time.monotonic() + wait
    while True:
        try:
            command.upgrade(alembic_config(settings.db.url), revision)
            break
        except Exception as exc:  # only a database that is not there yet is waited for; other errors stop here
            if not is_unavailable(exc):
                raise
            if time.monotonic() >= deadline:
                console.print(f"[red]the database is not reachable ({type(exc).__name__}: {exc})[/]")
                raise typer.Exit(1) from None
            console.print(f"database not reachable yet ({type(exc).__name__}); trying again in 1 s")
            time.sleep(1.0)
    console.print(f"[green]database at {revision}[/]")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. 'base' or '-1'.")) -> None:
    """Migrate the database down to REVISION."""
    from alembic import command

    from app.db import alembic_config

    command.downgrade(alembic_config(Settings().db.url), revision)
    console.print(f"[yellow]database at {revision}[/]")


@demo_app.command("load")
def demo_load(
    seed: int = typer.Option(42, help="Seed of the generator; the same seed gives the same data."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the demo region is already loaded."),
    telecom: bool = typer.Option(True, "--telecom/--no-telecom",
                                 help="Also release telecom indicators from ~5 M synthetic events"),
    scale: int = typer.Option(1, min=1, help="Prefectures: copies of the demo prefecture on a grid (17 gives "
                              "20,400 villages, a province); see docs/operations.md#scale"),
    households: int | None = typer.Option(None, min=1, help="Households in all (default: the demo's 25,000 per "
                                          "prefecture); each demo household is repeated in its village to reach it"),
) -> None:
    """Generate the demo region and (re)load it in one transaction; then release its telecom indicators.

    With --scale/--households the demo prefecture is the template of a province-sized region, multiplied in the
    database (e.g. --scale 17 --households 5000000: 20,400 villages, 5.1 million households, 12.6 million members)."""
    from app.db import create_engine, create_sessionmaker
    from app.services.demo import demo_present, load_demo

    settings = Settings()

    async def run() -> None:
        engine = create_engine(settings.db)
        try:
            sm = create_sessionmaker(engine)
            if if_empty and await demo_present(sm):
                console.print("demo region already loaded; nothing to do")
                return
            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                gen = progress.add_task("generating", total=100)
                load = progress.add_task("loading", total=8, visible=False)
                grow = progress.add_task("scaling", total=None, visible=False)

                def on_generate(step: str, pct: int) -> None:
                    progress.update(gen, completed=pct, description=f"generating: {step}")

                def on_load(table: str) -> None:
                    progress.update(load, visible=True, advance=1, description=f"loading: {table}")

                def on_scale(step: str, done: int, total: int) -> None:
                    progress.update(grow, visible=True, completed=done, total=total, description=f"scaling: {step}")

                report = await load_demo(sm, seed, generate_progress=on_generate, load_progress=on_load,
                                         scale=scale, households=households, scale_progress=on_scale)
                progress.update(load, completed=8, description="loaded")
        finally:
            await engine.dispose()
        console.print(
            f"[green]loaded region {report.region_id}[/] (seed {report.seed}): "
            + ", ".join(f"{k} {v:,}" for k, v in report.counts.items())
        )
        console.print(f"generated in {report.generate_s:.1f} s, loaded in {report.load_s:.1f} s"
                      + (f", scaled in {report.scale_s:.1f} s" if report.scale_s > 0.05 else ""))
        console.print(f"generator checksum {report.generator_checksum}")
        console.print(f"database checksum  {report.database_checksum}")
        if telecom:
            from app.telecom.demo import release_demo_telecom

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=console) as bar:
                task = bar.add_task("telecom", total=None)
                rel = await release_demo_telecom(settings.db.url, seed=seed,
                                                 progress=lambda m: bar.update(task, description=f"telecom: {m}"))
            console.print(f"telecom {rel.period}: {rel.events:,} events of {rel.devices:,} devices released in "
                          f"{sum(rel.seconds.values()):.1f} s ({sum(rel.published.values()):,} rows published)")

    asyncio.run(run())


@demo_app.command("registry-csv")
def demo_registry_csv(
    output: Path = typer.Argument(..., help="CSV file to write"),
    rows: int = typer.Option(1000, min=1, help="Households"),
    seed: int = typer.Option(7, help="Seed (the same seed gives the same file)"),
    encoding: str = typer.Option("utf-8", help="utf-8, or gbk as many Chinese exports are"),
) -> None:
    """Write a synthetic registry export (Chinese layout) for the demo villages, to try `tpa import households`."""
    from app.demo.registry_export import write_registry_csv

    async def villages(conn):  # noqa: ANN001, ANN202
        return [r[0] for r in await conn.fetch("SELECT code FROM village WHERE region_id = 'tieling-demo' "
                                               "ORDER BY code")]

    codes = _asyncpg_run(villages)
    if not codes:
        console.print("[red]the demo region is not loaded[/] (tpa demo load)")
        raise typer.Exit(2)
    write_registry_csv(output, rows, codes, seed=seed, encoding=encoding)
    console.print(f"wrote {rows:,} households to {output}; import with: tpa import households {output} "
                  "--region tieling-demo --mapping examples/mappings/households-zh.yaml")


def _with_engine(work):  # noqa: ANN001, ANN202
    """Run ``await work(engine, settings)`` with an engine on the configured database, disposed afterwards."""
    from app.db import create_engine

    settings = Settings()

    async def run():  # noqa: ANN202
        engine = create_engine(settings.db)
        try:
            return await work(engine, settings)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _run_in_session(work):  # noqa: ANN001, ANN202
    """Run ``work(session)`` in one transaction on the configured database."""
    from app.db import create_sessionmaker

    async def in_session(engine, _settings):  # noqa: ANN001, ANN202
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)

    return _with_engine(in_session)


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="analyst or admin"),
    name: str = typer.Option("", help="Who or what the key is for"),
    days: int = typer.Option(0, help="Expire after this many days (0 = never)"),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from app.auth import create_key
    from app.models.codes import Role

    try:
        r = Role(role)
    except ValueError:
        raise typer.BadParameter("role must be 'analyst' or 'admin'") from None
    new = _run_in_session(lambda s: create_key(s, r, name or r.value, days or None))
    console.print(f"[green]created {new.role.value} key {new.prefix}[/] — store it now, it is not shown again:")
    typer.echo(new.key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefix, role, name, dates); never the keys themselves."""
    from app.repositories.keys import list_keys

    for k in _run_in_session(list_keys):
        state = "revoked" if k.revoked else ("expires " + k.expires.date().isoformat() if k.expires else "active")
        typer.echo(f"{k.prefix}\t{k.role}\t{k.name}\t{k.created:%Y-%m-%d}\t{state}")


@keys_app.command("revoke")
def keys_revoke(prefix: str = typer.Argument(..., help="The 10-character prefix shown by 'keys list'")) -> None:
    """Revoke a key (takes effect within seconds)."""
    from app.repositories.keys import revoke_key

    if not _run_in_session(lambda s: revoke_key(s, prefix)):
        console.print(f"[red]no active key {prefix}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {prefix}")


@layers_app.command("publish")
def layers_publish(
    table: str = typer.Argument(..., help="[schema.]table with a primary key (and usually a geometry column), or "
                                "the id of a result collection (see `tpa results list`)"),
    layer_id: str = typer.Option("", "--id", help="Collection id (default: the table name)"),
    title: str = typer.Option("", help="Title (default: the table name)"),
    description: str = typer.Option("", help="Description"),
    datetime_column: str = typer.Option("", help="Date/time column for datetime queries"),
    role: str = typer.Option("", help="Restrict to a role (analyst or admin); default public"),
) -> None:
    """Publish a PostGIS table as an OGC collection, or list a job's result collection in /collections and keep it
    until it is unpublished. Running services see it within a second."""
    from app.repositories.layers import publish_table
    from app.repositories.results import is_result, set_listed

    async def publish(session):  # noqa: ANN001, ANN202
        conn = await session.connection()
        if await is_result(conn, table):
            await set_listed(conn, table, True, _results_ttl())
            return table, True
        schema, _, name = table.rpartition(".")
        return await publish_table(session, schema or "public", name, layer_id or name.replace("_", "-"),
                                   title or name, description or None, datetime_column or None, role or None), False

    result, was_result = _run_in_session(publish)
    what = "the result collection" if was_result else f"{table} as collection"
    console.print(f"[green]published {what} '{result}'[/]" + (" (kept until unpublished)" if was_result else ""))


@layers_app.command("unpublish")
def layers_unpublish(layer_id: str = typer.Argument(..., help="Id of a published result collection")) -> None:
    """Take a result collection out of /collections; the job's results expire after TPA_PROCESSES_RESULTS_TTL_DAYS
    (unless another of its collections stays published)."""
    from app.repositories.results import set_listed

    _run_in_session(lambda s: _with_conn(s, lambda c: set_listed(c, layer_id, False, _results_ttl())))
    console.print(f"unpublished '{layer_id}'; readable by its URL until it expires")


def _results_ttl():  # noqa: ANN202
    import datetime as dt

    return dt.timedelta(days=Settings().processes.results_ttl_days)


async def _with_conn(session, fn):  # noqa: ANN001, ANN202
    return await fn(await session.connection())


@results_app.command("list")
def results_list(
    all_: bool = typer.Option(False, "--all", help="Also the jobs whose results were deleted"),
    limit: int = typer.Option(200, help="Most recent jobs shown"),
) -> None:
    """The results of executions: job, process, owner, when made, when they expire, their collections."""
    from rich.table import Table

    from app.repositories.results import list_results

    rows = _run_in_session(lambda s: _with_conn(s, lambda c: list_results(c, all_, limit)))
    table = Table("job", "process", "owner", "created", "expires", "collections", box=None)
    for r in rows:
        expires = "deleted " + f"{r['pruned']:%Y-%m-%d %H:%M}" if r["pruned"] else \
            (f"{r['expires']:%Y-%m-%d %H:%M}" if r["expires"] else "kept")
        published = f", {r['listed']} published" if r["listed"] else ""
        table.add_row(str(r["run_id"]), r["process"], r["owner_name"] or r["owner"] or "anonymous",
                      f"{r['created']:%Y-%m-%d %H:%M}", expires,
                      f"{r['layers']}{published}: " + " ".join(r["layer_ids"]))
    Console(width=200).print(table)


@results_app.command("keep")
def results_keep(
    job: str = typer.Argument(..., help="Job id"),
    days: float = typer.Option(None, help="Keep them this many days from now"),
    forever: bool = typer.Option(False, "--forever", help="Keep them until deleted (or unpublished)"),
) -> None:
    """Keep a job's results longer than their expiry."""
    import datetime as dt

    from app.repositories.results import keep_results

    if (days is None) == (not forever):
        raise typer.BadParameter("give --days N or --forever")
    until = None if forever else dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    _run_in_session(lambda s: _with_conn(s, lambda c: keep_results(c, job, until)))
    console.print(f"the results of {job} are kept " + (f"until {until:%Y-%m-%d %H:%M} UTC" if until else
                                                        "until deleted"))


@results_app.command("prune")
def results_prune(
    as_of: str = typer.Option(None, "--as-of", help="Delete what has expired by this time (ISO 8601; default now)"),
) -> None:
    """Delete expired results and their tables now (the job worker does it every
    TPA_PROCESSES_RESULTS_PRUNE_EVERY_S)."""
    import datetime as dt

    from app.repositories.results import prune_expired

    when = None
    if as_of:
        try:
            when = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise typer.BadParameter(f"not an ISO 8601 time: {as_of!r}", param_hint="--as-of") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)

    jobs_done, tables = _with_engine(lambda engine, _settings: prune_expired(engine, when))
    console.print(f"deleted the expired results of {jobs_done} job(s): {tables} table(s)")


def _asyncpg_run(work):  # noqa: ANN001, ANN202
    """Run ``work(conn)`` on one asyncpg connection inside one transaction."""
    import asyncpg

    from app.settings import libpq_url

    async def run():  # noqa: ANN202
        conn = await asyncpg.connect(libpq_url(Settings().db.url))
        try:
            async with conn.transaction():
                return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@region_app.command("create")
def region_create(
    region_id: str = typer.Argument(..., help="Region id: lower-case letters, digits and '-' (e.g. georgia-us)"),
    country: str = typer.Option(..., help="ISO 3166-1 alpha-3 code (alpha-2 accepted), e.g. USA, CHN"),
    crs: str = typer.Option(..., help="Metric CRS for analyses, e.g. EPSG:26916 (the region's UTM zone)"),
    poverty_line: str = typer.Option(None, help="Per person per year; default: World Bank $3.00/day × 365 USD"),
    currency: str = typer.Option(None, help="ISO 4217 currency of the poverty line (with --poverty-line)"),
    poverty_line_note: str = typer.Option(None, help="Price basis and source of the poverty line"),
    name: str = typer.Option(None, help="Display name (default: the region id)"),
    admin_levels: str = typer.Option(None, help="Names of the admin levels, e.g. '1=State,3=County'"),
    code_system: str = typer.Option(None, help="Codes of the admin units, e.g. 'US FIPS', 'GB/T 2260'"),
    year: int = typer.Option(None, help="Default reference year"),
    description: str = typer.Option(None, help="Description"),
    attribution: str = typer.Option(None, help="Attribution of the region's data"),
) -> None:
    """Create an empty region; then load it with `tpa import`."""
    from app.ingest.regions import RegionSpec, create_region, parse_admin_levels

    spec = RegionSpec(region_id, name or region_id, country, crs, poverty_line, currency, poverty_line_note,
                      code_system, parse_admin_levels(admin_levels), year, description, attribution)
    made = _asyncpg_run(lambda conn: create_region(conn, spec))
    console.print(f"[green]created region {made['region_id']}[/] (country {made['country']}, analysis CRS "
                  f"EPSG:{made['analysis_crs']}, poverty line {made['poverty_line']} {made['currency']}/person/year)")


@region_app.command("list")
def region_list() -> None:
    """List regions with their counts of admin units, villages and households."""
    from rich.table import Table

    from app.ingest.regions import list_regions

    table = Table("region", "name", "country", "analysis CRS", "units", "villages", "households", box=None)
    for r in _asyncpg_run(list_regions):
        table.add_row(r["region_id"], r["name"], r["country"], f"EPSG:{r['analysis_crs']}", f"{r['units']:,}",
                      f"{r['villages']:,}", f"{r['households']:,}")
    Console().print(table)  # the listing is the command's output: stdout (messages go to stderr)


@region_app.command("delete")
def region_delete(
    region_id: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", help="Confirm: every row of the region is deleted"),
) -> None:
    """Delete a region and all its rows."""
    from app.ingest.regions import delete_region

    if not yes:
        console.print("[red]refusing without --yes[/]: this deletes every row of the region")
        raise typer.Exit(2)
    _asyncpg_run(lambda conn: delete_region(conn, region_id))
    console.print(f"deleted region {region_id}")


ENTITY_HELP = "boundaries, villages, households, persons, projects, facilities, roads or survey"


@app.command("import")
def import_file(
    entity: str = typer.Argument(..., help=ENTITY_HELP),
    file: Path = typer.Argument(..., help="GeoPackage, Shapefile (.shp or .zip), GeoJSON, FlatGeobuf, CSV or XLSX"),
    region: str = typer.Option(None, help="Region id (see `tpa region list`)"),
    mapping: Path = typer.Option(None, help="Mapping YAML (columns, value maps, units); default: same names"),
    source_crs: str = typer.Option(None, help="EPSG:xxxx, gcj02 or bd09 (overrides the file and the mapping)"),
    year: int = typer.Option(None, help="Registry year: rows are valid from 1 January (default: mapping, or now)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and count, write nothing"),
    partial: bool = typer.Option(False, "--partial",
                                 help="The file is not the whole registry: do not close rows missing from it"),
    repair: bool = typer.Option(False, "--repair", help="Repair invalid geometries with make_valid"),
    layer: str = typer.Option(None, help="Layer of a multi-layer file (GeoPackage)"),
    report: Path = typer.Option(None, help="Write every rejected row to this CSV file"),
    suggest_mapping: bool = typer.Option(False, "--suggest-mapping", help="Print a mapping template for FILE"),
    batch_rows: int = typer.Option(50_000, min=100, help="Rows per staging batch (memory bound)"),
    speeds: Path = typer.Option(None, help="Roads: JSON of speeds per road class (default: the region's last "
                                "network's speeds, else docs/methodology.md#road-networks)"),
    note: str = typer.Option(None, help="Roads: a note kept with the network version (e.g. the extract's date)"),
    survey: str = typer.Option(None, help="Survey: its id (lower case, digits, - and _), e.g. lsms-2025"),
    title: str = typer.Option(None, help="Survey: its title (default: the id)"),
    design: str = typer.Option(None, help="Survey: a description of its design (strata, stages, sizes)"),
) -> None:
    """Import a file into a region: validated, all or nothing, idempotent (upsert by natural key). Roads (an
    OpenStreetMap .osm.pbf or a line layer) become a new version of the region's road network."""
    from app.ingest.entities import entity as get_entity

    if entity == "survey":
        if not region or not survey or year is None:
            raise typer.BadParameter("a survey needs --region, --survey and --year")
        _import_survey(file, region, survey, title or survey, year, design, dry_run)
        return
    if entity == "roads":
        if not region:
            raise typer.BadParameter("--region is required", param_hint="--region")
        _import_roads(file, region, mapping, source_crs, layer, speeds, note, dry_run)
        return
    get_entity(entity)
    if suggest_mapping:
        typer.echo(_suggest(entity, file, mapping, layer, region), nl=False)
        return
    if not region:
        raise typer.BadParameter("--region is required", param_hint="--region")
    from app.ingest.pipeline import ImportOptions, run_import

    settings = Settings()
    secret = settings.security.pseudonym_key.get_secret_value().encode() if settings.security.pseudonym_key else None
    if secret is not None and len(secret) < 16:
        raise typer.BadParameter("TPA_PSEUDONYM_KEY must be at least 16 characters")
    opts = ImportOptions(entity, file, region, mapping, source_crs, year, dry_run, partial, repair, layer, batch_rows)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"reading {file.name}", total=None)

        def on_progress(phase: str, n: int, total: int | None) -> None:
            if phase == "reading":
                progress.update(task, advance=n, total=total)
            else:
                progress.update(task, description=phase)

        result = asyncio.run(run_import(settings.db.url, opts, secret, on_progress))
        progress.update(task, description="done" if result.ok else "rejected")
    _print_result(result, report)
    if not result.ok:
        raise typer.Exit(1)


def _import_survey(file: Path, region: str, survey_id: str, title: str, year: int, design: str | None,
                   dry_run: bool) -> None:
    import re

    from app.analysis.spatial import AnalysisError
    from app.services.surveys import read_survey, store_survey

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,99}", survey_id):
        raise typer.BadParameter("lower-case letters, digits, - and _ (up to 100)", param_hint="--survey")
    try:
        rows = read_survey(file)
        if dry_run:
            console.print(f"would write {len(rows):,} households of survey {survey_id} (dry run: nothing written)")
            return
        n = _asyncpg_run(lambda conn: store_survey(conn, {
            "survey_id": survey_id, "region_id": region, "title": title, "year": year, "design": design,
            "source": file.name}, rows))
    except AnalysisError as exc:
        console.print(f"[red]rejected[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]wrote[/] survey {survey_id}: {n:,} households (collection survey-households, "
                  f"restricted)")


def _import_roads(file: Path, region: str, mapping: Path | None, source_crs: str | None, layer: str | None,
                  speeds_file: Path | None, note: str | None, dry_run: bool) -> None:
    from app.ingest.roads import LineMapping, Speeds, read_roads
    from app.services.roads import current_network, store_network

    async def speeds_of_region(conn):  # noqa: ANN001, ANN202
        if speeds_file is not None:
            try:
                return Speeds.from_json(json.loads(speeds_file.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                raise typer.BadParameter(f"cannot read {speeds_file}: {exc}", param_hint="--speeds") from None
        last = await current_network(conn, region)
        return last.speeds if last is not None else Speeds.default()

    speeds = _asyncpg_run(speeds_of_region)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("features"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"reading {file.name}", total=None)
        edges = read_roads(file, speeds, LineMapping.load(mapping), source_crs, layer,
                           lambda n: progress.update(task, advance=n))
        for why, n in edges.skipped.items():
            console.print(f"[yellow]skipped[/] {n:,} × {why}")
        if dry_run:
            console.print(f"would write {len(edges):,} edges (dry run: nothing written)")
            return
        progress.update(task, description="storing and indexing")
        loaded = _asyncpg_run(lambda conn: store_network(conn, region, edges, speeds, file.name, note))
        progress.update(task, description="done")
    console.print(f"[green]wrote[/] {loaded.network.label} (network {loaded.network.network_id}): "
                  f"{loaded.network.edges:,} edges, {loaded.vertices:,} vertices, {loaded.length_km:,.1f} km; "
                  f"{loaded.components:,} connected part(s), the largest with "
                  f"{loaded.largest_component_share:.1%} of the vertices; {loaded.seconds:.1f} s")


def _suggest(entity: str, file: Path, mapping_path: Path | None, layer: str | None, region: str | None) -> str:
    from app.ingest.entities import entity as get_entity
    from app.ingest.mapping import SuggestContext, load_mapping, suggest_mapping
    from app.ingest.pipeline import enum_codes, mappable_fields, table_columns
    from app.ingest.readers import open_source

    m = load_mapping(mapping_path).mapping
    src = open_source(file, encoding=m.source.encoding, layer=layer or m.source.layer, sheet=m.source.sheet,
                      header_row=m.source.header_row, delimiter=m.source.delimiter)
    ent = get_entity(entity)

    async def catalogue(conn):  # noqa: ANN001, ANN202
        cols = await table_columns(conn, ent.table)
        enums = {c.name: (c.enum, await enum_codes(conn, c.enum)) for c in cols if c.enum}
        context = SuggestContext()
        if region:  # the region's country and level names make the codes and names of units
            row = await conn.fetchrow("SELECT country, metadata->'admin_levels' AS levels FROM region "
                                      "WHERE region_id = $1", region)
            if row is None:
                raise typer.BadParameter(f"no region {region!r} (see `tpa region list`)", param_hint="--region")
            levels = json.loads(row["levels"]) if row["levels"] else None
            context = SuggestContext(row["country"], {int(k): v for k, v in levels.items()} if levels else None)
        return mappable_fields(ent, cols), enums, context

    allowed, enums, context = _asyncpg_run(catalogue)
    vector = src.kind == "vector" and bool(src.geometry_type)
    return suggest_mapping(entity, src.columns, src.sample(500), allowed, enums, vector, context,
                           crs_in_file=bool(src.crs))


def _print_result(result, report: Path | None) -> None:  # noqa: ANN001
    import csv

    if result.error_count:
        from rich.table import Table

        table = Table(title=f"{result.error_count:,} problem(s) in {result.file}; nothing was written")
        for col in ("line", "field", "value", "reason"):
            table.add_column(col)
        for e in result.errors[:50]:
            table.add_row(str(e.line), e.field, e.value or "", e.reason)
        console.print(table)
        if result.error_count > 50:
            console.print(f"… and {result.error_count - 50:,} more" + ("" if report else " (use --report FILE)"))
    if report:
        with report.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "line", "field", "value", "reason"])
            for e in result.errors:
                w.writerow([result.file, e.line, e.field, e.value or "", e.reason])
        console.print(f"report: {report}")
    verb = "would write" if result.dry_run else ("wrote" if result.committed else "rejected")
    console.print(
        f"[{'green' if result.ok else 'red'}]{verb}[/] {result.entity} of {result.region} from {result.file}: "
        f"{result.rows:,} rows read; {result.inserted:,} new, {result.updated:,} updated, "
        f"{result.unchanged:,} unchanged, {result.closed:,} closed, {result.archived:,} archived"
        + (f"; {result.repaired:,} geometries repaired" if result.repaired else "")
        + (f"; {result.reduced_to_point:,} reduced to a point" if result.reduced_to_point else ""))
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(f"{result.elapsed:.1f} s ({result.rows_per_second:,.0f} rows/s): {phases}")


@export_app.command("region")
def export_region(
    region_id: str = typer.Argument(...),
    output: Path = typer.Argument(..., help="The GeoPackage to write (.gpkg)"),
) -> None:
    """Write every public layer of a region into one GeoPackage."""
    from app.ingest.export import export_geopackage

    counts = _with_engine(lambda engine, settings: export_geopackage(engine, settings, region_id, output))
    console.print(f"[green]wrote {output}[/]: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@export_app.command("pygeoapi-config")
def export_pygeoapi(
    region_id: str = typer.Argument(...),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)"),
    url: str = typer.Option("http://127.0.0.1:5000", help="Public URL of the pygeoapi server"),
    port: int = typer.Option(5000, help="Port pygeoapi binds"),
) -> None:
    """Write a pygeoapi configuration (PostgreSQL provider) for the region's public layers."""
    from app.ingest.export import pygeoapi_config

    text = _with_engine(lambda engine, settings: pygeoapi_config(engine, settings, region_id, server_url=url,
                                                                 port=port))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")


@telecom_app.command("aggregate")
def telecom_aggregate(
    events: list[Path] = typer.Argument(..., help="Parquet or CSV files, or directories of them: device_id, ts (UTC), "
                                        "lon/lat or cell_id"),
    region: str = typer.Option(..., help="Region id"),
    period: str = typer.Option(..., help="Month, YYYY-MM (local time)"),
    h3_res: int = typer.Option(8, help="H3 resolution of the cells"),
    k: int = typer.Option(15, help="Publish only where more than k distinct devices contribute (at least 15)"),
    min_nights: int = typer.Option(10, help="Distinct nights a device needs for a home cell"),
    tz: str = typer.Option("Asia/Shanghai", help="Time zone of local time (fixed offset over the period)"),
    epsilon: float = typer.Option(None, help="Laplace noise on counts with this ε per table (recorded)"),
    engine: str = typer.Option("duckdb", help="duckdb, or spark (pip install .[spark]; TPA_SPARK_MASTER)"),
    towers: Path = typer.Option(None, help="Tower file (cell_id, lon, lat) when events carry cell_id"),
    floor_res: int = typer.Option(None, help="Coarsest resolution suppressed cells roll up to (default res − 3)"),
    admin_level: int = typer.Option(None, help="Admin level for unit figures (default: finest with polygons)"),
    state_dir: Path = typer.Option(None, help="Operator-side directory keeping device homes for out-migration"),
    memory_limit: str = typer.Option("4GB", help="DuckDB memory limit (it spills beyond)"),
) -> None:
    """Compute the telecom indicators and write only privacy-safe aggregates to the database."""
    from app.telecom.release import ReleaseOptions, release

    opts = ReleaseOptions(list(events), region, period, h3_res, k, min_nights, tz, epsilon, towers, floor_res,
                          admin_level, state_dir, memory_limit, engine)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=None)
        report = asyncio.run(release(Settings().db.url, opts, lambda msg: bar.update(task, description=msg)))
        bar.update(task, description="done")
    console.print(f"[green]released {report.region} {report.period}[/]: {report.events:,} events, "
                  f"{report.devices:,} devices, {report.homes:,} with a home")
    if state_dir is not None:
        console.print(f"daily partials: {report.files_read} file(s) read, {report.files_skipped} already ingested")
    console.print("published: " + ", ".join(f"{k} {v:,}" for k, v in report.published.items() if v))
    console.print(f"withheld (groups of {k} or fewer devices, still too small at H3 resolution {report.floor_res}): "
                  + ", ".join(f"{what} {report.withheld_groups[what]:,} groups ({n:,} devices)"
                              for what, n in report.withheld_devices.items())
                  + f"; {report.suppressed:,} more rows withheld (admin units that would reveal a small group, "
                  "counts below k after noise)")
    if report.epsilon_spent:
        console.print(f"ε spent {report.epsilon_spent:g}; total for {report.period}: {report.epsilon_period_total:g}")
    secs = sum(report.seconds.values())
    console.print(f"{secs:.1f} s ({report.events / secs:,.0f} events/s): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items()))


@telecom_app.command("synthetic")
def telecom_synthetic(
    output: Path = typer.Argument(..., help="Parquet file to write"),
    region: str = typer.Option("tieling-demo", help="Region whose villages anchor the devices"),
    period: str = typer.Option(..., help="Month, YYYY-MM"),
    devices: int = typer.Option(20_000, min=1, help="Devices"),
    seed: int = typer.Option(1, help="Seed (the same seed gives the same events)"),
    tz: str = typer.Option("Asia/Shanghai", help="Time zone of the daily rhythm"),
) -> None:
    """Write synthetic events (homes and workplaces at the region's villages) to try `tpa telecom aggregate`."""
    from app.telecom.engine import Period, fixed_offset_seconds
    from app.telecom.synthetic import generate_events, village_anchors

    anchors = _asyncpg_run(lambda conn: village_anchors(conn, region))
    if not len(anchors):
        console.print(f"[red]region {region} has no villages[/]")
        raise typer.Exit(2)
    p = Period.month(period)
    n = generate_events(output, anchors, devices=devices, period=p,
                        utc_offset_s=fixed_offset_seconds(tz, p), seed=seed)
    console.print(f"wrote {n:,} events of {devices:,} devices to {output}")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port."),
    workers: int = typer.Option(1, help="Worker processes."),
    reload: bool = typer.Option(False, help="Reload on code changes (development)."),
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers, reload=reload,
                proxy_headers=True)


@app.command("worker")
def worker(
    concurrency: int = typer.Option(1, help="Jobs run at the same time."),
) -> None:
    """Run process jobs without serving HTTP (for deployments with TPA_PROCESSES_WORKER=false on the API)."""
    import asyncio

    from app.main import create_app

    async def run() -> None:
        settings = Settings()
        settings.processes.worker = True
        settings.processes.concurrency = concurrency
        web = create_app(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGTERM (docker stop, systemd, Kubernetes) stops the worker as Ctrl+C does; as a container's PID 1 the
        # process has no default action for it, and would only be killed after the grace period
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with web.router.lifespan_context(web):
            if web.state.catalog.catalog is None:
                raise SystemExit("the database is not reachable or not migrated")
            console.print(f"worker running (concurrency {concurrency}); Ctrl+C or SIGTERM stops it")
            await stop.wait()
        console.print("worker stopped")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def openapi_document() -> dict:
    from app.main import create_app, openapi_document

    return openapi_document(create_app(Settings()))


@openapi_app.command("export")
def openapi_export(
    output: Path = typer.Option(DEFAULT_OPENAPI, "--output", "-o", help="File to write ('-' for stdout)."),
) -> None:
    """Write the OpenAPI document of the service (no database needed)."""
    text = json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    if str(output) == "-":
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")


@monitoring_app.command("rules")
def monitoring_rules(region: str = typer.Option(..., "--region", help="Region id")) -> None:
    """The region's monitoring rules (its own rows replace the defaults with the same id)."""
    from rich.table import Table

    from app.services.monitoring import region_rules

    async def work(engine, _settings):  # noqa: ANN001, ANN202
        async with engine.connect() as conn:
            return await region_rules(conn, region)

    table = Table("rule", "category", "expression", "whose", box=None)
    for r in _with_engine(work):
        table.add_row(r.rule_id, r.category, r.expression, r.region_id or "default")
    Console().print(table)


@monitoring_app.command("run")
def monitoring_run(
    region: str = typer.Option(..., "--region", help="Region id"),
    period: int = typer.Option(..., "--period", help="Registry year to screen, e.g. 2024"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be raised; write nothing"),
) -> None:
    """Screen a region's registry records of one year with its monitoring rules and write the alerts (restricted
    collection 'alerts'): alerts found again keep their status and note; 'new' alerts no longer found are removed."""
    from app.services.monitoring import screen

    async def work(engine, settings):  # noqa: ANN001, ANN202
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            bar.add_task(f"screening {region} {period}", total=None)
            return await screen(engine, settings.security, region, period, write=not dry_run)

    result = _with_engine(work)
    console.print(f"{region} {period}: {result.records:,} household records, {len(result.alerts):,} alerts "
                  f"in {result.seconds:.1f} s")
    for name, n in sorted(result.by_category.items()):
        console.print(f"  category {name}: {n:,}")
    for name, n in sorted(result.by_rule.items()):
        console.print(f"  rule {name}: {n:,}")
    if result.written:
        w = result.written
        console.print(f"written: {w['created']:,} new, {w['updated']:,} found again, {w['removed']:,} removed")
    else:
        console.print("dry run: nothing written")


@monitoring_app.command("risk")
def monitoring_risk(
    region: str = typer.Option(..., "--region", help="Region id"),
    until: int = typer.Option(None, "--until", help="Last registry year read (default: the latest)"),
    validate_years: int = typer.Option(3, "--validate-years", help="Last years validated by time"),
    threshold: float = typer.Option(0.1, "--threshold", help="Probability from which a household is at high risk"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Train and validate; store nothing"),
) -> None:
    """Train the return-risk model on a region's registry (validated by time against the monitoring rules), store
    it and score its households for the year after --until (the process return-risk, run here)."""
    from types import SimpleNamespace

    from app.processes.base import DatabaseJob
    from app.processes.monitoring import ReturnRisk, RiskInputs

    process = ReturnRisk()
    inputs = RiskInputs(region=region, until=until, validate_years=validate_years, threshold=threshold,
                        dry_run=dry_run)

    async def work(engine, settings):  # noqa: ANN001, ANN202
        async def analyse(data):  # noqa: ANN001, ANN202 (in this process: the command has no time limit)
            return await asyncio.to_thread(process.run, inputs, data, os.cpu_count() or 1)

        app_ = SimpleNamespace(state=SimpleNamespace(engine=engine, settings=settings))
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            bar.add_task(f"training the return-risk model of {region}", total=None)
            return await process.run_in_database(DatabaseJob(app_, None, None, "tpa monitoring risk", analyse),
                                                 inputs)

    started = time.perf_counter()
    out = _with_engine(work).values
    v, t = out["validation"], out["trained"]
    console.print(f"{region}: learned from {t['household_years']:,} household-years ({t['trained_from']}–"
                  f"{t['trained_until']}, {t['positives']:,} in poverty the next year) in "
                  f"{time.perf_counter() - started:.1f} s")
    console.print("validation by time (model | rules only):")
    for y in v["by_year"]:
        console.print(f"  {y['outcome_year']}: AUC {_fmt(y['auc'])} | {_fmt(y['baseline']['auc'])}, Brier "
                      f"{_fmt(y['brier'], 5)} | {_fmt(y['baseline']['brier'], 5)}, {y['positives']:,} of {y['n']:,}")
    console.print(f"  pooled: AUC {_fmt(v['pooled']['auc'])} | {_fmt(v['baseline']['auc'])}, Brier "
                  f"{_fmt(v['pooled']['brier'], 5)} | {_fmt(v['baseline']['brier'], 5)}")
    sc = out["scored"]
    console.print(f"scored {sc['households']:,} households of {sc['year']} for {sc['for_year']}: {sc['high_risk']:,} "
                  f"at p ≥ {sc['threshold']:g}")
    console.print(f"model stored: {out['model_id']}" if out["model_id"] else "dry run: nothing stored")


@roads_app.command("list")
def roads_list(region: str = typer.Option(None, "--region", help="Region id (default: every region)")) -> None:
    """The network versions of a region (the current one marked), with their size and source."""
    from rich.table import Table

    async def rows(conn):  # noqa: ANN001, ANN202
        return await conn.fetch(
            "SELECT network_id, region_id, version, current, source, note, imported_at, edges, vertices, length_km, "
            "components, largest_component_share FROM road_network WHERE $1::text IS NULL OR region_id = $1 "
            "ORDER BY region_id, version", region)

    table = Table("network", "region", "version", "current", "source", "imported", "edges", "km", "parts",
                  "largest part", "note", box=None)
    for r in _asyncpg_run(rows):
        table.add_row(str(r["network_id"]), r["region_id"], str(r["version"]), "yes" if r["current"] else "",
                      r["source"], f"{r['imported_at']:%Y-%m-%d %H:%M}", f"{r['edges']:,}", f"{r['length_km']:,.1f}",
                      str(r["components"]), f"{r['largest_component_share']:.1%}", r["note"] or "")
    Console().print(table)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main() -> None:
    from app.errors import DomainError

    logging.basicConfig(level=logging.WARNING)
    try:
        app()
    except DomainError as exc:  # bad input or a data rule: a clear message, no traceback
        console.print(f"[red]{exc.title}:[/] {exc.detail}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
