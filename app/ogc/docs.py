"""The method, served: ``docs/methodology.md`` of the repository as an HTML page (``/docs/methodology``) and as
Markdown (``/docs/methodology.md``), so process descriptions can link to its sections on an offline intranet.

Rendered with markdown-it-py (CommonMark and tables); a heading written ``## Title {#anchor}`` gets the id
``anchor``, the target of links such as ``/docs/methodology#gi-star``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from app.ogc.render import html_response, url_for

router = APIRouter(tags=["Capabilities"])
CONFORMANCE: tuple[str, ...] = ()

METHODOLOGY = Path(__file__).resolve().parent.parent.parent / "docs" / "methodology.md"
_ANCHOR = re.compile(r"\s*\{#([a-z0-9][a-z0-9-]*)\}\s*$")


class MarkdownResponse(Response):
    media_type = "text/markdown"
    charset = "utf-8"


def method_link(request: Request, anchor: str) -> str:
    return url_for(request, "/docs/methodology") + f"#{anchor}"


@cache
def rendered() -> tuple[str, tuple[tuple[int, str, str], ...]]:
    """The document as HTML, and its table of contents: (level, anchor, title) of every heading with an id."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(METHODOLOGY.read_text(encoding="utf-8"))
    toc = []
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        inline = tokens[i + 1]
        m = _ANCHOR.search(inline.content)
        if m is None:
            continue
        tok.attrSet("id", m.group(1))
        inline.content = inline.content[: m.start()]
        last = inline.children[-1] if inline.children else None
        if last is not None and last.type == "text":
            last.content = _ANCHOR.sub("", last.content)
        toc.append((int(tok.tag[1]), m.group(1), inline.content))
    return md.renderer.render(tokens, md.options, {}), tuple(toc)


def anchors() -> set[str]:
    return {a for _, a, _ in rendered()[1]}


@router.get("/docs/methodology", operation_id="get_methodology", summary="The method: every indicator and "
            "analysis, its formula, defaults and references (HTML)", response_class=HTMLResponse)
async def get_methodology(request: Request) -> Response:
    body, toc = rendered()
    return html_response(request, "docs.html", content=Markup(body), toc=toc, doc_title="Method")  # noqa: S704


@router.get("/docs/methodology.md", operation_id="get_methodology_markdown", summary="The method as Markdown",
            response_class=MarkdownResponse,
            responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}})
async def get_methodology_markdown() -> Response:
    return MarkdownResponse(METHODOLOGY.read_bytes())
