"""More than one machine (docs/operations.md#scale-out): reads from a streaming replica made by ``pg_basebackup``
on a second cluster of this run, including the replica behind (replay paused) and down. The shared rate limit is
tested in test_reliability, the recovery of jobs of a killed worker in test_processes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import _make_keys
from tpa_testing import PrivateCluster, _dsn, serve

from app.models.codes import Role

# timing-sensitive (time limits, load, outages): run alone, after the parallel part of make test (Makefile)
pytestmark = pytest.mark.serial

VILLAGE = "/collections/villages/items/211202001001"
PATCH = {"content-type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def primary_and_replica(demo_template: str) -> Iterator[tuple[PrivateCluster, PrivateCluster, str, str]]:
    with PrivateCluster() as primary:
        url = primary.copy_database(_dsn(demo_template), "tpa", exclude_data=("telecom_agg", "telecom_od"))
        with PrivateCluster(standby_of=primary) as replica:
            yield primary, replica, url, replica.url("tpa")


def _reads(api: str) -> dict[str, float]:
    text = httpx.get(api + "/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(r'^tpa_db_reads_total\{server="([^"]+)"\} (\S+)$', text, re.M)}


def _wait(predicate, seconds: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)


def test_reads_go_to_the_replica_never_older_than_seen_and_survive_it(primary_and_replica):
    primary, replica, url, replica_url = primary_and_replica
    assert replica.sql("SELECT pg_is_in_recovery()", "tpa") == "t"
    admin = {"Authorization": f"Bearer {_make_keys(url)[Role.admin]}"}
    standby = f"127.0.0.1:{replica.port}"
    env = {"TPA_DB_READ_URLS": replica_url, "TPA_API_RATE_LIMIT_SHARED": "false"}
    with serve(url, extra_env=env) as api:
        # the replica is found by the first check and takes the reads
        _wait(lambda: httpx.get(api + VILLAGE).status_code == 200 and _reads(api).get(standby, 0) > 0)
        before = _reads(api)
        for _ in range(10):
            assert httpx.get(api + VILLAGE).status_code == 200
        after = _reads(api)
        assert after[standby] - before[standby] >= 10 and after["primary"] == before["primary"]

        # behind: replay paused; a write is read back from the primary, never the replica's older copy
        replica.sql("SELECT pg_wal_replay_pause()")
        r = httpx.patch(api + VILLAGE, content='{"properties": {"name": "副本测试村"}}'.encode(),
                        headers={**PATCH, **admin})
        assert r.status_code == 200, r.text
        before = _reads(api)
        for _ in range(5):
            assert httpx.get(api + VILLAGE).json()["properties"]["name"] == "副本测试村"
        after = _reads(api)
        assert after[standby] == before[standby] and after["primary"] - before["primary"] >= 5
        assert replica.sql("SELECT name FROM admin_unit WHERE code = '211202001001'", "tpa") != "副本测试村"

        # caught up again: reads go back to it, and it has the write
        replica.sql("SELECT pg_wal_replay_resume()")
        _wait(lambda: replica.sql("SELECT name FROM admin_unit WHERE code = '211202001001'", "tpa") == "副本测试村")
        _wait(lambda: httpx.get(api + VILLAGE).status_code == 200 and _reads(api)[standby] > after[standby])

        # down: every read is still answered (by the primary); back: the replica is used again
        replica.stop("immediate")
        codes, slowest = [], 0.0
        for _ in range(20):
            t0 = time.monotonic()
            codes.append(httpx.get(api + VILLAGE, timeout=30).status_code)
            slowest = max(slowest, time.monotonic() - t0)
        assert codes == [200] * 20, codes
        print(f"reads while the replica is down: 20 answered, the slowest in {slowest:.2f} s")
        down = _reads(api)
        time.sleep(1.5)
        assert [httpx.get(api + VILLAGE).status_code for _ in range(5)] == [200] * 5
        assert _reads(api)[standby] == down[standby]
        metrics = httpx.get(api + "/metrics").text
        assert f'tpa_db_replica_up{{server="{standby}"}} 0.0' in metrics
        replica.start()
        _wait(lambda: httpx.get(api + VILLAGE).status_code == 200 and _reads(api)[standby] > down[standby], 30)
