"""Every process the service offers, by id (the ids are part of the API), grouped by domain."""

from __future__ import annotations

from app.processes.base import Process
from app.processes.coupling import COUPLING
from app.processes.monitoring import MONITORING
from app.processes.needs import NEEDS
from app.processes.network import NETWORK
from app.processes.poverty import POVERTY
from app.processes.sae import SAE
from app.processes.siting import SITING

PROCESSES: dict[str, Process] = {p.id: p for p in (*SITING, *NETWORK, *NEEDS, *COUPLING, *POVERTY, *SAE, *MONITORING)}
