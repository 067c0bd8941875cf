"""Languages of the HTML pages: English (the source) and Simplified Chinese, from Babel message catalogues.

The language is the one a person chose with the switch on every page (a cookie), else the best of the browser's
``Accept-Language``, else English. The catalogue is ``app/locale/zh_Hans_CN/LC_MESSAGES/messages.po``, compiled in
memory when first needed (no binary .mo in the repository); ``tests/test_i18n.py`` checks that it translates every
message the templates use. JSON answers are not translated: ids, codes and property names are the API's contract.
"""

from __future__ import annotations

import gettext as gettext_module
import io
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = {"en": "English", "zh-CN": "简体中文"}
DEFAULT = "en"
COOKIE = "tpa_lang"
CATALOGUE = Path(__file__).resolve().parent / "locale" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
_current: ContextVar[str] = ContextVar("tpa_language", default=DEFAULT)


DATA_CATALOGUE = CATALOGUE.with_name("data.po")  # texts from the code: collection, property and process titles


def _compiled(path: Path) -> gettext_module.GNUTranslations:
    with path.open("rb") as fh:
        catalog = read_po(fh, locale="zh_Hans_CN")
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext_module.GNUTranslations(buf)


@lru_cache(maxsize=len(LANGUAGES))
def translations(lang: str) -> gettext_module.NullTranslations:
    if lang != "zh-CN":
        return gettext_module.NullTranslations()
    pages = _compiled(CATALOGUE)
    pages.add_fallback(_compiled(DATA_CATALOGUE))
    return pages


def data_text(text: str | None) -> str | None:
    """A text from the data (a title, a property description) in the page's language, where the catalogue has it
    (results and imported attributes keep their own words)."""
    return gettext(text) if text else text


def weighted(header: str) -> list[tuple[str, float, int]]:
    """(value, q, position) of each item of an Accept-style header (RFC 9110 §12.4.2), lower-cased; q 0 when
    unreadable. Also the media types of ``Accept`` (app.ogc.render)."""
    out = []
    for i, part in enumerate(header.split(",")):
        bits = [b.strip() for b in part.split(";")]
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        if bits[0]:
            out.append((bits[0].lower(), q, i))
    return out


def _accepted(header: str) -> list[str]:
    """Language tags of an Accept-Language header, best first (RFC 9110 §12.5.4)."""
    return [tag for tag, q, _ in sorted(weighted(header), key=lambda t: (-t[1], t[2])) if q > 0]


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The page language: the switch's cookie, else the first of Accept-Language we have (any Chinese tag reads the
    Simplified catalogue), else English."""
    if cookie in LANGUAGES:
        return cookie
    for tag in _accepted(accept_language or ""):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en") or tag == "*":
            return "en"
    return DEFAULT


def activate(cookie: str | None, accept_language: str | None) -> str:
    lang = choose(cookie, accept_language)
    _current.set(lang)
    return lang


def activate_for(request: Any) -> str:
    """The language of a request's page (its cookies and headers), made current for the templates."""
    return activate(request.cookies.get(COOKIE), request.headers.get("accept-language"))


def current() -> str:
    return _current.get()


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def code_label(code_list: str, code: Any, lang: str | None = None) -> str:
    """The label of a code of a code list (``CODE_LABELS``) in the page's language; the code itself when the list
    does not have it (a region's own codes)."""
    from app.models.codes import CODE_LABELS

    pair = CODE_LABELS.get(code_list, {}).get(str(code))
    if pair is None:
        return str(code)
    return pair[1] if (lang or _current.get()) == "zh-CN" else pair[0]


def code_labels(code_list: str) -> dict[str, dict[str, str]]:
    """Every label of a code list in both languages: ``{code: {"en": …, "zh-CN": …}}`` (for JSON answers)."""
    from app.models.codes import CODE_LABELS

    return {c: {"en": en, "zh-CN": zh} for c, (en, zh) in CODE_LABELS.get(code_list, {}).items()}
