"""Every process the service offers, by id (the ids are part of the API)."""

from __future__ import annotations

from app.processes.definitions import STAGE1, Process
from app.processes.stage23 import STAGE23

PROCESSES: dict[str, Process] = {p.id: p for p in (*STAGE1, *STAGE23)}
