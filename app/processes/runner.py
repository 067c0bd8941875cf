"""Runs one analysis in a child process, so that a time limit or a dismissal can stop it for certain.

Child processes come from a ``forkserver`` that has imported the analysis libraries once, so a job
starts in milliseconds rather than re-importing esda/spopt (~2 s). The result travels back pickled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from app.analysis.spatial import AnalysisError

log = logging.getLogger("tpa.jobs")

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["app.processes.catalogue", "ortools.graph.python.min_cost_flow", "esda", "libpysal",
                             "access", "pulp", "pandas"])


class JobTimeout(Exception):
    pass


class JobStopped(Exception):
    pass


class JobCrashed(Exception):
    pass


def _child(conn: Any, process_id: str, inputs: dict[str, Any], data: dict[str, Any], threads: int) -> None:
    from app.processes.catalogue import PROCESSES

    os.setpgrp()  # its own process group: a kill stops the solver (CBC) it starts too
    _die_with_parent()
    try:
        proc = PROCESSES[process_id]
        out = proc.run(proc.Inputs.model_validate(inputs), data, threads)
        conn.send(("ok", out))
    except AnalysisError as exc:
        conn.send(("invalid", str(exc)))
    except MemoryError:
        conn.send(("error", ("the analysis ran out of memory", "")))
    except Exception as exc:  # reported as the job's failure reason, with the type for diagnosis
        # the traceback goes to the service's log (the job's message stays short)
        conn.send(("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=-8))))
    finally:
        conn.close()


def _die_with_parent() -> None:
    """Linux: be killed when the forkserver goes (it exits when the service dies, even by SIGKILL), so an
    analysis never outlives the service that would record its result."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def warm_up() -> None:
    """Start the forkserver (and its imports) ahead of the first job."""
    _CTX.Process(target=_noop, daemon=True).start()


def _noop() -> None:
    return None


async def run_isolated(
    process_id: str, inputs: dict[str, Any], data: dict[str, Any], threads: int, time_limit: float,
    should_stop: Callable[[], Awaitable[bool]] | None = None, check_every: float = 1.0,
) -> Any:
    """The process's ``Outcome``; AnalysisError for bad input; JobTimeout, JobStopped or JobCrashed otherwise."""
    loop = asyncio.get_running_loop()
    recv, send = _CTX.Pipe(duplex=False)
    child = _CTX.Process(target=_child, args=(send, process_id, inputs, data, threads), daemon=True)
    # the first start launches the forkserver (imports of ~3 s): keep the event loop (heartbeats) free
    started = loop.run_in_executor(None, child.start)
    deadline = time.monotonic() + time_limit
    try:
        await asyncio.shield(started)
        send.close()
        while True:
            wait = min(check_every, max(deadline - time.monotonic(), 0.0))
            if await loop.run_in_executor(None, recv.poll, wait):
                break
            if time.monotonic() >= deadline:
                raise JobTimeout(f"the time limit of {time_limit:g} s was reached")
            if should_stop is not None and await should_stop():
                raise JobStopped("the job was dismissed")
        try:
            kind, value = await loop.run_in_executor(None, recv.recv)
        except EOFError:
            await loop.run_in_executor(None, child.join, 5)
            raise JobCrashed(f"the analysis process ended unexpectedly (exit code {child.exitcode})") from None
    finally:
        if not started.done():  # cancelled while starting: let the start finish, then stop the child
            await asyncio.wait([started])
        if child.pid is not None and child.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.kill()
        if child.pid is not None:
            await loop.run_in_executor(None, child.join, 5)
        send.close()
        recv.close()
    if kind == "ok":
        return value
    if kind == "invalid":
        raise AnalysisError(value)
    message, trace = value
    if trace:
        log.error("analysis of %s failed: %s\n%s", process_id, message, trace)
    raise JobCrashed(message)
