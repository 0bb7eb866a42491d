"""POST /v1/learn before the worker starts: read the request (JSON, or a multipart upload), check
it as ``alearn learn`` would, and store the upload where the worker can read it.

A file is parsed here once, so a missing column or an unknown label is a 422 at once rather than
a job that fails later. Nothing of the client's file name is used as a path: only its suffix.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..errors import UserError
from ..library import AdapterLibrary
from ..tasks.spec import check_name
from .config import Limits
from .errors import ApiError, limit_error
from .protocol import LearnRequest

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
LIST_FIELDS = ("text_column", "labels")


@dataclass
class Upload:
    filename: str
    data: bytes


@dataclass
class LearnJobSpec:
    """What the job manager needs: the task's name, where it comes from, and the options (plain data)."""

    task: str
    source: dict[str, Any]
    options: dict[str, Any]
    upload_dir: Path | None = None


async def read_learn_request(request: Request, limits: Limits) -> tuple[LearnRequest, Upload | None]:
    """The learn options and the uploaded file, from a JSON body or a multipart form."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _read_form(request, limits)
    if ctype in ("application/json", ""):
        try:
            body = await request.json()
        except ApiError:
            raise
        except Exception:  # noqa: BLE001 - any unreadable body is the client's mistake
            raise ApiError(400, "the body is not valid JSON") from None
        return _validated(body), None
    raise ApiError(415, f"send JSON (a built-in task) or multipart/form-data (an upload), not {ctype!r}")


async def _read_form(request: Request, limits: Limits) -> tuple[LearnRequest, Upload | None]:
    try:
        form = await request.form(max_files=1, max_fields=64)
    except ApiError:
        raise  # the body went over its size cap while it was read
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body
        raise ApiError(400, f"cannot read the multipart form: {str(exc)[:200]}") from None
    fields: dict[str, Any] = {}
    upload = None
    for key in set(form.keys()):
        values = form.getlist(key)
        if key == "file":
            f = values[-1]
            if not isinstance(f, UploadFile):
                raise ApiError(422, "file: send the data as a file part")
            data = await f.read(limits.max_upload_bytes + 1)
            if len(data) > limits.max_upload_bytes:
                raise limit_error("max_upload_bytes", f"the upload is over {limits.max_upload_bytes} bytes")
            upload = Upload(f.filename or "upload.csv", data)
        elif any(isinstance(v, UploadFile) for v in values):
            raise ApiError(422, f"{key}: expected a text field, got a file")
        elif key in LIST_FIELDS:
            fields[key] = [x.strip() for v in values for x in str(v).split(",") if x.strip()]
        else:
            fields[key] = values[-1]
    return _validated(fields), upload


def _validated(body: Any) -> LearnRequest:
    try:
        return LearnRequest.model_validate(body)
    except ValidationError as exc:
        parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]]
        raise ApiError(422, "; ".join(parts)) from None


def prepare_job(req: LearnRequest, upload: Upload | None, library: Path) -> LearnJobSpec:
    """Check the request as ``alearn learn`` does and store the upload; 422 with one line on a mistake."""
    from ..tasks import CATALOG

    if (req.task is None) == (upload is None):
        raise ApiError(422, "give exactly one of task (a built-in task name) or file (an upload)")
    if req.force_new and req.reuse:
        raise ApiError(422, "force_new and reuse exclude each other")
    if req.reuse is not None and req.reuse not in AdapterLibrary.open(library, verify=False).adapters:
        raise ApiError(422, f"reuse {req.reuse!r}: no such adapter in the library")
    options = req.model_dump()
    if req.task is not None:
        if req.template is not None:
            raise ApiError(422, "template is for an upload; a built-in task has its own")
        if req.task not in CATALOG:
            raise ApiError(422, f"unknown task {req.task!r}; built-in tasks: {', '.join(CATALOG)}")
        name = _checked_name(req.name or req.task)
        return LearnJobSpec(name, {"kind": "catalog", "name": req.task}, options)
    assert upload is not None
    return _prepare_upload(req, upload, options)


def _prepare_upload(req: LearnRequest, upload: Upload, options: dict[str, Any]) -> LearnJobSpec:
    from .worker import build_task

    if not req.description or not req.description.strip():
        raise ApiError(422, "an upload needs a description: the instruction a person would give for this task")
    if req.template is not None and not req.template.strip():
        raise ApiError(422, "template is empty: give the prompt, with each text column as {column}")
    base = Path(upload.filename.replace("\\", "/")).name
    suffix = Path(base).suffix.lower()
    if suffix not in SUFFIXES:
        raise ApiError(422, f"unsupported file type {suffix or base!r}; upload .csv, .tsv or .jsonl")
    name = _checked_name(req.name or Path(base).stem.replace(" ", "_"))
    folder = Path(tempfile.mkdtemp(prefix="alearn-upload-"))
    path = folder / f"data{suffix}"
    path.write_bytes(upload.data)
    source = {"kind": "file", "path": str(path), "name": name, "filename": base[:100]}
    try:
        build_task(source, options)  # parse once now: a bad file is a 422, not a failed job
    except UserError as exc:
        _remove(folder)
        raise ApiError(422, str(exc).replace(str(path), source["filename"])) from None
    except BaseException:
        _remove(folder)
        raise
    return LearnJobSpec(name, source, options, folder)


def _checked_name(name: str) -> str:
    try:
        return check_name(name, "task")
    except UserError as exc:
        raise ApiError(422, str(exc)) from None


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
