"""Values kept with the version of the tables they were computed from (``table_version``), served only while that
version is current: an edit or an import makes every value it touches stale at once. LRU, bounded by total weight."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from threading import Lock
from typing import Any

log = logging.getLogger(__name__)


class VersionedCache:
    def __init__(self, capacity: int, weight: Callable[[Any], int] = lambda _: 1, largest: int | None = None) -> None:
        self.capacity = capacity
        self._weight = weight
        self._largest = capacity if largest is None else largest  # a heavier value is not kept (it would evict all)
        self._data: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._size = 0
        self._lock = Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, key: Hashable, version: Hashable) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] != version:
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, version: Hashable, value: Any) -> None:
        w = self._weight(value)
        if w > self._largest:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._size -= self._weight(old[1])
            self._data[key] = (version, value)
            self._size += w
            while self._size > self.capacity and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self._size -= self._weight(dropped)


class CountCache(VersionedCache):
    """Exact counts (numberMatched) by query; :data:`OVER_BUDGET` for a count still running in the background.

    ``budget_ms``: the time a count may take within a request. Counts over it are finished one at a time per process
    (``finish_later``), so a burst of new filters on a huge table queues instead of running side by side.
    """

    OVER_BUDGET = -1

    def __init__(self, maxsize: int = 4096, budget_ms: int = 0) -> None:
        super().__init__(maxsize)
        self.budget_ms = budget_ms
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._one_at_a_time: asyncio.Semaphore | None = None

    def finish_later(self, key: Hashable, version: Hashable, exact: Callable[[], Awaitable[int]]) -> None:
        """Count ``exact()`` in the background and keep it under ``version`` (unless already under way)."""
        if key in self._running:
            return
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Semaphore(1)
        gate = self._one_at_a_time

        async def run() -> None:
            try:
                async with gate:
                    self.put(key, version, await exact())
            except Exception as exc:  # noqa: BLE001 (the answer stays without numberMatched; the next version retries)
                log.warning("background count failed: %s", type(exc).__name__)
            finally:
                self._running.pop(key, None)

        self._running[key] = asyncio.get_running_loop().create_task(run())

    async def close(self) -> None:
        """Cancel the counts still running (at shutdown)."""
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TileCache(VersionedCache):
    """Rendered tiles by request (path, query, the geometry variant the role sees), bounded in bytes
    (TPA_TILES_CACHE_MB; 0 turns it off); one tile may take at most an eighth of it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, weight=len, largest=max_bytes // 8)
