"""The HTML pages in English and Simplified Chinese (issue 20, first part): Babel message catalogues, the language
from the switch's cookie or Accept-Language, `<html lang>` and Content-Language; the catalogue translates every
message of the templates. Real HTTP through the app on the demo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app import i18n

ROOT = Path(__file__).resolve().parent.parent
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def test_the_catalogue_translates_every_message_of_the_templates():
    with i18n.CATALOGUE.open("rb") as fh:
        catalog = read_po(fh)
    found = list(extract_from_dir(str(ROOT / "app" / "templates"), method_map=[("**.html", "jinja2")],
                                  options_map={"**.html": {"extensions": "jinja2.ext.i18n"}}))
    assert len(found) > 100
    for _, _, message, _, _ in found:
        entry = catalog.get(message)
        assert entry is not None and not entry.fuzzy, message
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        ids = message if isinstance(message, tuple) else (message,)
        assert all(strings), message
        for s in strings:  # the same placeholders, so formatting never fails
            assert set(PLACEHOLDER.findall(s)) == set(PLACEHOLDER.findall(ids[0])), message


def test_texts_from_the_data_are_translated():
    """Collection titles, property descriptions and process titles come from the code; data.po must have them all."""
    from app.layers.catalog import builtin_layers, telecom_layers
    from app.processes.catalogue import PROCESSES
    from app.settings import SecuritySettings

    with i18n.DATA_CATALOGUE.open("rb") as fh:
        catalog = read_po(fh)
    from app.ogc.overview import FIGURES, HISTORY, SOURCE
    from app.ogc.processes import _inputs_description

    layers = builtin_layers(SecuritySettings(jitter_key="test")) + telecom_layers()
    texts = {lyr.title for lyr in layers} | {p.description for lyr in layers for p in lyr.props if p.description}
    texts |= {lyr.description for lyr in layers}
    texts |= {p.title for p in PROCESSES.values()} | {p.description for p in PROCESSES.values()}
    for p in PROCESSES.values():  # the portal's analysis forms show the inputs' titles and help
        for entry in _inputs_description(p).values():
            texts |= {entry["title"], entry["description"]} - {""}
    texts |= {title for _, title in FIGURES + HISTORY} | {SOURCE}
    from app.processes.styles import legend_texts

    texts |= legend_texts()  # the portal's legends of analysis results
    assert len(texts) > 300
    missing = sorted(t for t in texts if not (catalog.get(t) and catalog.get(t).string))
    assert not missing, missing


@pytest.mark.parametrize(("header", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.5", "zh-CN"), ("en;q=0.5, zh-CN;q=0.9", "zh-CN"), ("zh-TW", "zh-CN"), ("zh", "zh-CN"),
    ("en-US", "en"), ("fr-FR, de;q=0.8", "en"), ("", "en"), ("fr, zh;q=0.1", "zh-CN"), ("zh;q=0, en", "en"),
])
def test_accept_language_is_negotiated(header, expected):
    assert i18n.choose(None, header) == expected
    assert i18n.choose("en", header) == "en" and i18n.choose("zh-CN", header) == "zh-CN"  # the switch wins


PAGES = [
    ("/", "数据集", "the published layers"),
    ("/collections", "公共服务设施", ">Facilities</a>"),
    ("/collections/villages", "距乡镇政府距离（公里）", "Distance to the township seat (km)"),
    ("/collections/villages/items", "个要素，显示", " of 1200 features."),
    ("/collections/villages/queryables", "可查询属性", "Properties usable"),
    ("/collections/villages/schema", "本数据集要素的属性", "The properties of the features"),
    ("/collections/villages/tiles/WebMercatorQuad", "瓦片矩阵集范围", "Tile matrix set limits"),
    ("/tileMatrixSets", "各数据集矢量瓦片所采用的切片方案", "The tiling schemes"),
    ("/processes", "冷热点分析（Getis-Ord Gi*）", "Hot and cold spots (Getis-Ord Gi*)"),
    ("/processes/hotspots", "计算方法", "How it is computed"),
    ("/regions", "本服务载入的地区", "The regions this service holds"),
    ("/conformance", "标准符合性", "Conformance</h1>"),
]


@pytest.mark.parametrize(("path", "chinese", "english"), PAGES)
async def test_pages_in_both_languages(api, path, chinese, english):
    zh = await api.get(path, params={"f": "html"}, headers=ZH)
    assert zh.status_code == 200, zh.text[:300]
    assert '<html lang="zh-CN">' in zh.text and zh.headers["content-language"] == "zh-CN"
    assert chinese in zh.text and english not in zh.text
    assert ">首页<" in zh.text and 'aria-current="true">简体中文<' in zh.text
    en = await api.get(path, params={"f": "html"}, headers=EN)
    assert '<html lang="en">' in en.text and en.headers["content-language"] == "en"
    assert english in en.text and chinese not in en.text.replace("简体中文", "")
    assert "Accept-Language" in en.headers["vary"]


async def test_error_pages_speak_the_language_too(api):
    r = await api.get("/collections/households/items", headers={**ZH, "Accept": "text/html"})
    assert r.status_code == 401 and '<html lang="zh-CN">' in r.text and "如何登录" in r.text
    assert "How to sign in" not in r.text
    r = await api.get("/collections/nope", headers={**EN, "Accept": "text/html"})
    assert r.status_code == 404 and '<html lang="en">' in r.text


async def test_the_switch_remembers_the_choice(api):
    r = await api.get("/language", params={"set": "zh-CN", "next": "/collections?f=html"})
    assert r.status_code == 303 and r.headers["location"] == "http://testserver/collections?f=html"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("tpa_lang=zh-CN;") and "SameSite=lax" in cookie and "Max-Age=31536000" in cookie
    page = await api.get("/collections", params={"f": "html"}, headers={**EN, "Cookie": "tpa_lang=zh-CN"})
    assert '<html lang="zh-CN">' in page.text  # the choice beats the browser's languages
    back = await api.get("/collections", params={"f": "html"}, headers={**ZH, "Cookie": "tpa_lang=en"})
    assert '<html lang="en">' in back.text
    # the switch links back to the page it is on, with its query
    assert 'href="http://testserver/language?set=en&amp;next=/collections%3Ff%3Dhtml"' in page.text
    for target in ("//evil.example/x", "https://evil.example/", "\\\\evil"):  # only pages of this site
        r = await api.get("/language", params={"set": "en", "next": target})
        assert r.status_code == 303 and r.headers["location"] == "http://testserver/"
    bad = await api.get("/language", params={"set": "fr"})
    assert bad.status_code == 400
    # JSON is not translated: ids, codes and property names are the API's contract
    doc = await api.get("/collections", headers=ZH)
    assert doc.headers["content-type"] == "application/json" and "content-language" not in doc.headers


async def test_texts_of_the_data_follow_each_request_not_the_first(api):
    """``"Poverty rate"|t`` in a template must not be folded into the language of the page's first request (Jinja
    folds filters of constants unless they take the context)."""
    for _ in range(2):
        en = await api.get("/portal", headers=EN)
        zh = await api.get("/portal", headers=ZH)
        assert "贫困发生率" in zh.text and "Poverty rate" not in zh.text
        assert "Poverty rate" in en.text and "贫困发生率" not in en.text
        assert ">村</option>" in zh.text and ">Village</option>" in en.text  # code labels too


@pytest.mark.parametrize(("path", "zh", "en"), [
    ("/collections/facilities/items", ">医院<", ">Hospital<"),
    ("/collections/projects/items", ">运营中<", ">Operating<"),
])
async def test_code_values_show_their_labels_in_both_languages(api, path, zh, en):
    page_zh = await api.get(path, params={"f": "html", "limit": 200}, headers=ZH)
    page_en = await api.get(path, params={"f": "html", "limit": 200}, headers=EN)
    assert zh in page_zh.text and en in page_en.text
