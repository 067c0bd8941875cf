"""The dependency direction of the source tree: the HTTP layer (``app/ogc``) parses, negotiates and renders; the
layer catalogue and its queries (``app/layers``) sit below it and know nothing of HTTP; nothing below the HTTP layer
imports it. Read from the import statements themselves (ast), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def modules(folder: str) -> list[Path]:
    return sorted((APP / folder).rglob("*.py"))


def test_nothing_below_the_http_layer_imports_it():
    offenders = []
    for path in APP.rglob("*.py"):
        rel = path.relative_to(APP).as_posix()
        if rel.startswith("ogc/") or rel in ("main.py",):
            continue
        bad = sorted(m for m in imports(path) if m == "app.ogc" or m.startswith("app.ogc."))
        if bad:
            offenders.append((rel, bad))
    assert offenders == []


def test_the_layer_catalogue_knows_nothing_of_http_processes_or_sql_repositories():
    forbidden = ("fastapi", "starlette", "app.ogc", "app.processes", "app.repositories", "app.services", "app.auth",
                 "app.main", "app.cli")
    offenders = []
    for path in modules("layers"):
        bad = sorted(m for m in imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            offenders.append((path.name, bad))
    assert offenders == []
    assert {p.name for p in modules("layers")} >= {"catalog.py", "crs.py", "query.py", "cql2.py"}


def test_process_inputs_are_read_without_a_made_up_request():
    jobs = (APP / "processes" / "jobs.py").read_text(encoding="utf-8")
    assert "Request(scope)" not in jobs and "import _catalog" not in jobs and "app.ogc" not in jobs


def test_every_package_is_found_by_setuptools():
    """A folder of modules without __init__.py imports from a checkout but is left out of an installed build."""
    folders = {p.parent for p in APP.rglob("*.py")}
    assert sorted(str(f.relative_to(APP)) for f in folders if not (f / "__init__.py").exists()) == []


def test_processes_are_grouped_by_domain():
    from app.processes.catalogue import PROCESSES

    where = {pid: type(p).__module__.rsplit(".", 1)[1] for pid, p in PROCESSES.items()}
    assert where == {
        "spatial-autocorrelation": "siting", "hotspots": "siting", "project-coverage-correlation": "siting",
        "accessibility": "siting", "coverage-gaps": "siting", "location-allocation": "siting",
        "needs-assessment": "needs", "needs-matching": "needs", "coupling-coordination": "coupling", "mpi": "poverty",
        "monitoring-screen": "monitoring", "return-risk": "monitoring", "isochrones": "network",
        "small-area-estimation": "sae",
    }
