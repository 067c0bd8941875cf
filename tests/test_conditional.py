"""Conditional GET (issue 19): the catalogue, a collection and items pages carry a weak ETag built from the tables'
versions, the caller and the query; If-None-Match answers 304 until the data change. Real PostGIS (a private copy
of the demo, edited here), real HTTP through the app."""

from __future__ import annotations

import pytest
from conftest import _make_keys
from tpa_testing import ThrowawayDatabase, client_for, settings_for

from app.models.codes import Role


@pytest.fixture(scope="module")
def cond_db(demo_template: str):
    with ThrowawayDatabase("cond", template=demo_template) as db:
        yield db


@pytest.fixture(scope="module")
def cond_keys(cond_db):
    return _make_keys(cond_db.url)


@pytest.fixture
async def cc(cond_db):
    async with client_for(settings_for(cond_db.url)) as c:
        yield c


async def _revalidate(c, path: str, params=None, headers=None) -> tuple[str, int]:
    """The ETag of a first answer, and the status of the same request sent again with If-None-Match."""
    first = await c.get(path, params=params, headers=headers or {})
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    again = await c.get(path, params=params, headers={**(headers or {}), "If-None-Match": etag})
    if again.status_code == 304:
        assert again.content == b"" and again.headers["etag"] == etag
    return etag, again.status_code


async def test_documents_answer_304_while_the_data_are_unchanged(cc, cond_keys):
    for path, params in (("/collections", None), ("/collections/villages", None),
                         ("/collections/villages/items", {"limit": 5}),
                         ("/collections/villages/items", {"limit": 5, "filter": "population > 500"})):
        etag, status = await _revalidate(cc, path, params)
        assert status == 304, path
    anon = await cc.get("/collections")
    assert anon.headers["cache-control"] == "public, no-cache"
    # another query, another caller: another validator
    a, _ = await _revalidate(cc, "/collections/villages/items", {"limit": 5})
    b, _ = await _revalidate(cc, "/collections/villages/items", {"limit": 6})
    analyst = {"Authorization": f"Bearer {cond_keys[Role.analyst]}"}
    c, status = await _revalidate(cc, "/collections", headers=analyst)
    d, _ = await _revalidate(cc, "/collections")
    assert len({a, b}) == 2 and c != d and status == 304
    old = await cc.get("/collections/villages/items", params={"limit": 6}, headers={"If-None-Match": a})
    assert old.status_code == 200
    # HTML pages are not validated (each carries its own script nonce)
    html = await cc.get("/collections/villages/items", params={"f": "html", "limit": 5})
    assert html.status_code == 200 and "etag" not in html.headers


async def test_an_edit_changes_the_validators(cc, cond_keys):
    admin = {"Authorization": f"Bearer {cond_keys[Role.admin]}"}
    items, status = await _revalidate(cc, "/collections/villages/items", {"limit": 5})
    collection, _ = await _revalidate(cc, "/collections/villages")
    catalogue, _ = await _revalidate(cc, "/collections")
    assert status == 304
    first = (await cc.get("/collections/villages/items", params={"limit": 1})).json()["features"][0]
    r = await cc.patch(f"/collections/villages/items/{first['id']}",
                       content=b'{"properties": {"population": 100000}}',
                       headers={"content-type": "application/merge-patch+json", **admin})
    assert r.status_code == 200, r.text
    for path, params, etag in (("/collections/villages/items", {"limit": 5}, items),
                               ("/collections/villages", None, collection), ("/collections", None, catalogue)):
        after = await cc.get(path, params=params, headers={"If-None-Match": etag})
        assert after.status_code == 200 and after.headers["etag"] != etag, path
    page = (await cc.get("/collections/villages/items", params={"limit": 5})).json()
    assert any(f["properties"]["population"] == 100000 for f in page["features"])
