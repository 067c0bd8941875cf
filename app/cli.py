"""The ``tpa`` command line: database migrations, the demo region, serving, OpenAPI export."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from app.settings import Settings

app = typer.Typer(help="tpa-gis: Targeted Poverty Alleviation GIS service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo region 'Tieling (demo)'.", no_args_is_help=True)
openapi_app = typer.Typer(help="The OpenAPI document.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (roles analyst and admin).", no_args_is_help=True)
layers_app = typer.Typer(help="Extra PostGIS tables published as OGC collections.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(layers_app, name="layers")
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(openapi_app, name="openapi")
console = Console(stderr=True)

DEFAULT_OPENAPI = Path("openapi/openapi.json")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database (DATABASE_URL) to REVISION."""
    from alembic import command

    from app.db import alembic_config

    settings = Settings()
    command.upgrade(alembic_config(settings.db.url), revision)
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
) -> None:
    """Generate the demo region and (re)load it in one transaction."""
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
                load = progress.add_task("loading", total=7, visible=False)

                def on_generate(step: str, pct: int) -> None:
                    progress.update(gen, completed=pct, description=f"generating: {step}")

                def on_load(table: str) -> None:
                    progress.update(load, visible=True, advance=1, description=f"loading: {table}")

                report = await load_demo(sm, seed, generate_progress=on_generate, load_progress=on_load)
                progress.update(load, completed=7, description="loaded")
        finally:
            await engine.dispose()
        console.print(
            f"[green]loaded region {report.region_id}[/] (seed {report.seed}): "
            + ", ".join(f"{k} {v:,}" for k, v in report.counts.items())
        )
        console.print(f"generated in {report.generate_s:.1f} s, loaded in {report.load_s:.1f} s")
        console.print(f"generator checksum {report.generator_checksum}")
        console.print(f"database checksum  {report.database_checksum}")

    asyncio.run(run())


def _run_in_session(work):  # noqa: ANN001, ANN202
    """Run ``work(session)`` in one transaction on the configured database."""
    from app.db import create_engine, create_sessionmaker

    async def run():  # noqa: ANN202
        engine = create_engine(Settings().db)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


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
    table: str = typer.Argument(..., help="[schema.]table with a primary key (and usually a geometry column)"),
    layer_id: str = typer.Option("", "--id", help="Collection id (default: the table name)"),
    title: str = typer.Option("", help="Title (default: the table name)"),
    description: str = typer.Option("", help="Description"),
    datetime_column: str = typer.Option("", help="Date/time column for datetime queries"),
    role: str = typer.Option("", help="Restrict to a role (analyst or admin); default public"),
) -> None:
    """Publish a PostGIS table as an OGC collection (restart the service to see it)."""
    from app.repositories.layers import publish_table

    schema, _, name = table.rpartition(".")
    result = _run_in_session(lambda s: publish_table(
        s, schema or "public", name, layer_id or name.replace("_", "-"), title or name, description or None,
        datetime_column or None, role or None))
    console.print(f"[green]published {schema or 'public'}.{name} as collection '{result}'[/]")


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
