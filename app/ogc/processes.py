"""OGC API - Processes - Part 1: Core. /processes, typed execution per process, /jobs with results and dismissal.

Each process has its own execution route and request schema (``Execute<Process>``), so the OpenAPI
document gives generated clients real types. Synchronous execution is the default; ``Prefer:
respond-async`` queues a job (201 + Location). Spatial outputs are published as collections and
returned as links to their items.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, create_model

from app.analysis.spatial import AnalysisError
from app.auth import SIGN_IN, current_role
from app.db import translated_errors
from app.errors import DomainError, InvalidParameter, NotFound, Unauthorized
from app.ogc.common import Link
from app.ogc.docs import method_link, rendered
from app.ogc.render import json_response, link, respond, url_for
from app.processes import jobs, store
from app.processes.base import Process
from app.processes.catalogue import PROCESSES

router = APIRouter(tags=["Processes"])
PROCESS_ID = Literal[tuple(PROCESSES)]  # the ids of the processes offered, as an enum in the API description
JSON = "application/json"
HTML = "text/html"
GEOJSON = "application/geo+json"
_C = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
CONFORMANCE: tuple[str, ...] = tuple(_C + c for c in ("core", "ogc-process-description", "json", "html", "oas30",
                                                       "job-list", "dismiss"))
ITEMS_REL = "http://www.opengis.net/def/rel/ogc/1.0/items"


class ProcessFailed(DomainError):
    status, code, title = 400, "InvalidParameterValue", "The process could not run on these inputs"


class ExecutionTimeout(DomainError):
    status, code, title = 503, "ExecutionTimeout", "The synchronous execution took too long"


class NoSuchProcess(DomainError):
    status, code, title = 404, "no-such-process", "No such process"

    def __init__(self, process_id: str) -> None:
        super().__init__(f"There is no process '{process_id}'.")

    @property
    def type(self) -> str:
        return "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/no-such-process"


class NotReady(DomainError):
    status, code, title = 404, "result-not-ready", "The job has no results (yet)"

    @property
    def type(self) -> str:
        return "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/result-not-ready"


class ResultsExpired(DomainError):
    status, code, title = 404, "ResultsExpired", "The results expired"


class OutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transmissionMode: Literal["value", "reference"] | None = Field(  # noqa: N815 (OGC name)
        None, description="Spatial outputs are always published and returned by reference")


class StatusInfo(BaseModel):
    """The status of a job (OGC API - Processes statusInfo)."""

    type: Literal["process"] = "process"
    processID: str  # noqa: N815
    jobID: str  # noqa: N815
    status: Literal["accepted", "running", "successful", "failed", "dismissed"]
    message: str | None = None
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    updated: str | None = None
    progress: int | None = None
    expires: str | None = Field(None, description="When the job's results are deleted (null: kept)")
    links: list[Link] = []


class JobList(BaseModel):
    jobs: list[StatusInfo]
    numberMatched: int  # noqa: N815
    links: list[Link]


JobControl = Literal["sync-execute", "async-execute", "dismiss"]


class ProcessSummary(BaseModel):
    id: str
    title: str
    description: str
    version: str
    keywords: list[str] = []
    jobControlOptions: list[JobControl]  # noqa: N815
    outputTransmission: list[Literal["value", "reference"]]  # noqa: N815
    links: list[Link]


class ProcessList(BaseModel):
    processes: list[ProcessSummary]
    links: list[Link]


class InputDescription(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    title: str
    description: str = ""
    minOccurs: int  # noqa: N815
    maxOccurs: int  # noqa: N815
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the input")


class OutputDescription(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    title: str
    description: str = ""
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the output")


class ProcessDescription(ProcessSummary):
    inputs: dict[str, InputDescription]
    outputs: dict[str, OutputDescription]


class ResultLink(BaseModel):
    """A spatial output: the link to the items of the collection that holds it."""

    href: str
    rel: str
    type: str
    title: str | None = None


class JobResults(BaseModel):
    """The results document of a job: one member per output id (see the process's ``…Results`` schema), each a
    value or, for a spatial output, a link to its collection."""

    model_config = ConfigDict(extra="allow")


def results_model(p: Process) -> type[BaseModel]:
    """The results document of one process, typed member by member (one member per output id)."""
    fields: dict[str, Any] = {}
    for i, (out_id, spec) in enumerate(p.outputs.items()):
        linked = spec.layer or spec.link
        kind: Any = ResultLink if linked else Annotated[Any, WithJsonSchema(spec.schema)]
        fields[f"o{i}"] = (kind | None if linked else kind,
                           Field(None, alias=out_id, title=spec.title, description=spec.description))
    name = "".join(w.capitalize() for w in p.id.split("-")) + "Results"
    return create_model(name, __config__=ConfigDict(populate_by_name=True), **fields)


def _iso(v: dt.datetime | None) -> str | None:
    return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if v else None


def _actor(request: Request) -> str | None:
    return getattr(request.state, "actor", None)


def _summary(request: Request, p: Process) -> dict[str, Any]:
    links = [link(url_for(request, f"/processes/{p.id}"), "self", JSON, "Process description"),
             link(url_for(request, f"/processes/{p.id}/execution"), "http://www.opengis.net/def/rel/ogc/1.0/execute",
                  JSON, "Execute")]
    links += [link(method_link(request, anchor), "describedby", HTML, f"Method: {title}")
              for anchor, title in method_sections(p)]
    return {
        "id": p.id, "title": p.title, "description": p.description, "version": p.version,
        "keywords": list(p.keywords), "jobControlOptions": ["sync-execute", "async-execute", "dismiss"],
        "outputTransmission": ["value", "reference"], "links": links,
    }


def method_sections(p: Process) -> list[tuple[str, str]]:
    """(anchor, title) of the sections of the method that define what the process computes."""
    titles = {a: t for _, a, t in rendered()[1]}
    return [(a, titles[a]) for a in p.method if a in titles]


def _inputs_description(p: Process) -> dict[str, Any]:
    schema = p.Inputs.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    out = {}
    for name, prop in schema["properties"].items():
        entry = {"title": prop.get("title", name), "description": prop.get("description", ""),
                 "minOccurs": 1 if name in required else 0, "maxOccurs": 1,
                 "schema": {k: v for k, v in prop.items() if k not in ("title", "description")}}
        used = _referenced(entry["schema"], defs)
        if used:
            entry["schema"]["$defs"] = {k: defs[k] for k in sorted(used)}
        if name in p.example:  # what a form (the portal's) starts from for inputs without a default
            entry["schema"]["examples"] = [p.example[name]]
        out[name] = entry
    return out


def _referenced(node: Any, defs: dict[str, Any], seen: set[str] | None = None) -> set[str]:
    """Names of the ``$defs`` a schema refers to, directly or through other definitions."""
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in seen and name in defs:
                seen.add(name)
                _referenced(defs[name], defs, seen)
        for v in node.values():
            _referenced(v, defs, seen)
    elif isinstance(node, list):
        for v in node:
            _referenced(v, defs, seen)
    return seen


@router.get("/processes", operation_id="get_processes", summary="The processes offered",
            response_model=ProcessList, responses={200: {"content": {HTML: {}}}})
async def get_processes(request: Request) -> Response:
    return respond(request, {"processes": [_summary(request, p) for p in PROCESSES.values()],
                             "links": [link(url_for(request, "/processes"), "self", JSON, "Processes")]},
                   "processes.html")


@router.get("/processes/{processId}", operation_id="get_process", summary="Description of a process",
            response_model=ProcessDescription,
            responses={200: {"content": {HTML: {}}}, 404: {"description": "No such process"}})
async def get_process(request: Request, processId: str = Path(...)) -> Response:  # noqa: N803
    p = PROCESSES.get(processId)
    if p is None:
        raise NoSuchProcess(processId)
    body = _summary(request, p)
    body["inputs"] = _inputs_description(p)
    body["outputs"] = {k: {"title": o.title, "description": o.description, "schema": o.schema}
                       for k, o in p.outputs.items()}
    return respond(request, body, "process.html")


def status_info(request: Request, run: dict[str, Any]) -> dict[str, Any]:
    jid = str(run["run_id"])
    links = [link(url_for(request, f"/jobs/{jid}"), "self", JSON, "Job status")]
    message = run["message"]
    if run.get("pruned"):
        message = f"done; the results expired and were deleted on {_iso(run['pruned'])}"
    elif run["status"] == "successful":
        links.append(link(url_for(request, f"/jobs/{jid}/results"), "http://www.opengis.net/def/rel/ogc/1.0/results",
                          JSON, "Job results"))
        for out_id, lid in ((run.get("result") or {}).get("collections") or {}).items():
            links.append(link(url_for(request, f"/collections/{lid}/items"), ITEMS_REL, GEOJSON,
                              f"Output '{out_id}' as a collection"))
            links.append(link(url_for(request, f"/collections/{lid}"), "describedby", JSON,
                              f"Collection of output '{out_id}'"))
    return StatusInfo(processID=store.process_of(run).id, jobID=jid, status=run["status"],
                      message=message, created=_iso(run["created"]), started=_iso(run["started"]),
                      finished=_iso(run["finished"]), updated=_iso(run["updated"]), progress=run["progress"],
                      expires=None if run.get("pruned") else _iso(run.get("expires")), links=links).model_dump()


def results_document(request: Request, run: dict[str, Any]) -> dict[str, Any]:
    """One member per output id: values as they are, spatial outputs as links to their collections."""
    p = store.process_of(run)
    result = run.get("result") or {}
    wanted = set((run["params"].get("outputs") or {}).keys()) or set(p.outputs)
    body: dict[str, Any] = {}
    for out_id in p.outputs:
        if out_id not in wanted:
            continue
        if out_id == "provenance":
            body[out_id] = result.get("provenance")
        elif out_id in (result.get("collections") or {}):
            lid = result["collections"][out_id]
            body[out_id] = {"href": url_for(request, f"/collections/{lid}/items"), "rel": ITEMS_REL,
                            "type": GEOJSON, "title": f"Output '{out_id}' (collection {lid})"}
        elif p.outputs[out_id].link and (target := (result.get("values") or {}).get(out_id)):
            body[out_id] = {"href": url_for(request, target["path"], target.get("params")), "rel": ITEMS_REL,
                            "type": GEOJSON, "title": p.outputs[out_id].title}
        else:
            body[out_id] = (result.get("values") or {}).get(out_id)
    return body


PREFER_PARAMETER = {
    "name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
    "description": "RFC 7240 preferences: `respond-async` queues a job (201, status document, `Location` of the job); "
    "without it the process runs synchronously (200, results document). Other preferences are ignored."}


def _prefers_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def _execution_route(p: Process) -> None:
    model = create_model(
        "Execute" + "".join(w.capitalize() for w in p.id.split("-")),
        __config__=ConfigDict(extra="forbid"),
        inputs=(p.Inputs, Field(description=f"Inputs of {p.id}")),
        outputs=(dict[str, OutputRequest] | None,
                 Field(None, description="Outputs to return (default: all): " + ", ".join(p.outputs))),
        response=(Literal["document"], Field("document", description="Results document (one member per output)")),
        publish=(StrictBool, Field(False, description="List the spatial outputs in /collections and keep them until "
                                   "they are unpublished (analysts and administrators). Unpublished results are "
                                   "readable by their URL and deleted when they expire.")),
    )

    async def execute(request: Request, body: Annotated[model, Body()]) -> Response:  # type: ignore[valid-type]
        role = await current_role(request)
        outputs = {k: v.model_dump(exclude_none=True) for k, v in (body.outputs or {}).items()}
        unknown = sorted(set(outputs) - set(p.outputs))
        if unknown:
            raise InvalidParameter(f"{p.id} has no output {', '.join(unknown)}; outputs: {', '.join(p.outputs)}.")
        run_async = _prefers_async(request)
        try:
            async with translated_errors():
                run = await jobs.submit(request, p, body.inputs, outputs, role, _actor(request), run_async,
                                        body.publish)
        except AnalysisError as exc:
            raise ProcessFailed(str(exc)) from None
        if run_async:
            jid = str(run["run_id"])
            return json_response(status_info(request, run), status=201,
                                 headers={"Location": url_for(request, f"/jobs/{jid}"),
                                          "Preference-Applied": "respond-async"})
        if run["status"] != "successful":
            message = run["message"] or "the job failed"
            if message.startswith("invalid input: "):
                raise ProcessFailed(message.removeprefix("invalid input: "), jobID=str(run["run_id"]))
            if "time limit" in message:
                raise ExecutionTimeout(f"{message}; execute asynchronously (Prefer: respond-async).",
                                       jobID=str(run["run_id"]))
            raise jobs.JobFailed(message, jobID=str(run["run_id"]))
        return json_response(results_document(request, run),
                             headers={"Location": url_for(request, f"/jobs/{run['run_id']}")})

    # the body model is local to this function: give FastAPI real annotations, not postponed strings
    execute.__annotations__ = {"request": Request, "body": Annotated[model, Body()], "return": Response}
    router.add_api_route(
        f"/processes/{p.id}/execution", execute, methods=["POST"], operation_id=f"execute_{p.id.replace('-', '_')}",
        summary=f"Execute {p.id}", description=p.description + "\n\nSynchronous by default (200, results document); "
        "with `Prefer: respond-async` a job is queued (201, status document, Location of the job).",
        responses={200: {"description": "Results: one member per output id", "model": results_model(p)},
                   201: {"description": "Job accepted", "model": StatusInfo},
                   400: {"description": "Invalid inputs"}, 401: {"description": "Authentication required"},
                   403: {"description": "Role too low for a referenced collection"},
                   503: {"description": "Synchronous time limit reached"}},
        openapi_extra={"parameters": [PREFER_PARAMETER]},
    )


for _p in PROCESSES.values():
    _execution_route(_p)


@router.post("/processes/{processId}/execution", operation_id="execute_unknown", include_in_schema=False)
async def execute_unknown(processId: str = Path(...)) -> Response:  # noqa: N803
    raise NoSuchProcess(processId)


@router.get("/jobs", operation_id="get_jobs", summary="Jobs of the caller (all jobs for admins)",
            response_model=JobList, responses={200: {"content": {HTML: {}}}})
async def get_jobs(
    request: Request,
    limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000),
    status: Annotated[list[Literal["accepted", "running", "successful", "failed", "dismissed"]] | None,
                      Query()] = None,
    processID: Annotated[list[PROCESS_ID] | None, Query()] = None,  # type: ignore[valid-type]  # noqa: N803
) -> Response:
    role = await current_role(request)
    if role is None:
        raise Unauthorized("Listing jobs needs an API key (a job's own URL, returned when it was created, stays "
                           f"readable): {SIGN_IN}")
    owner = None if role.value == "admin" else _actor(request)
    async with translated_errors():
        rows, total = await store.list_runs(request.app.state.engine, owner, limit, offset, status, processID)
    links = [link(url_for(request, "/jobs", {"limit": limit, "offset": offset}), "self", JSON, "Jobs")]
    if offset + len(rows) < total:
        links.append(link(url_for(request, "/jobs", {"limit": limit, "offset": offset + limit}), "next", JSON,
                          "Next page"))
    return respond(request, {"jobs": [status_info(request, r) for r in rows], "numberMatched": total,
                             "links": links}, "jobs.html")


@router.get("/jobs/{jobId}", operation_id="get_job", summary="Status of a job", response_model=StatusInfo,
            responses={200: {"content": {HTML: {}}}, 404: {"description": "No such job"}})
async def get_job(request: Request, jobId: str = Path(...)) -> Response:  # noqa: N803
    role = await current_role(request)
    run = await store.visible_run(request, jobId, _actor(request), role)
    return respond(request, status_info(request, run), "job.html")


@router.get("/jobs/{jobId}/results", operation_id="get_job_results", summary="Results of a job",
            response_model=JobResults, responses={404: {"description": "No such job, or no results yet"}})
async def get_job_results(request: Request, jobId: str = Path(...)) -> Response:  # noqa: N803
    role = await current_role(request)
    run = await store.visible_run(request, jobId, _actor(request), role)
    if run["status"] != "successful":
        raise NotReady(f"The job is {run['status']}" + (f": {run['message']}" if run["message"] else "") + ".")
    if run.get("pruned"):
        raise ResultsExpired(f"The results of the job '{jobId}' expired and were deleted on {_iso(run['pruned'])}; "
                             "execute the process again (publish results, or `tpa results keep`, to keep them).")
    return json_response(results_document(request, run))


@router.delete("/jobs/{jobId}", operation_id="dismiss_job", summary="Dismiss a job (stop it, remove its results)",
               response_model=StatusInfo, responses={404: {"description": "No such job"}})
async def dismiss_job(request: Request, jobId: str = Path(...)) -> Response:  # noqa: N803
    role = await current_role(request)
    run = await store.visible_run(request, jobId, _actor(request), role)
    if run["status"] == "dismissed":
        raise NotFound(f"The job '{jobId}' was already dismissed.")
    await jobs.dismiss(request.app, run)
    run = await store.visible_run(request, jobId, _actor(request), role)
    return json_response(status_info(request, run))




def document_examples(doc: dict[str, Any]) -> dict[str, Any]:
    """Each execution's example body, as it runs on the demo region. Added to the finished document: FastAPI drops
    null members from what ``openapi_extra`` gives it, and a null in an example can matter (it overrides a
    default)."""
    for p in PROCESSES.values():
        op = doc["paths"][f"/processes/{p.id}/execution"]["post"]
        op["requestBody"]["content"][JSON]["examples"] = {
            "demo": {"summary": p.example_summary, "value": {"inputs": p.example}}}
    return doc
