"""The committed OpenAPI document is what the code produces; the CLI writes it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app as cli
from app.cli import openapi_document

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_code():
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == openapi_document(), "openapi/openapi.json is stale: run 'make openapi' and commit it"


def test_cli_exports(tmp_path):
    out = tmp_path / "o.json"
    result = CliRunner().invoke(cli, ["openapi", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert {"/healthz", "/readyz"} <= set(doc["paths"])
    assert doc["paths"]["/readyz"]["get"]["operationId"] == "get_readiness"
