"""Task sequences as YAML files: built-in ones ship with the package; users write their own.

A sequence file::

    name: my-stream
    tasks:
      - sst2                         # a built-in task
      - task: sst2                   # a built-in task under another name / description
        name: sst2-reworded
        description: Is this review happy or unhappy?
      - name: tickets                # the user's own file
        data: data/tickets.csv       # relative to this YAML file
        description: Route the support ticket to the right team.
        text_columns: [text]
        label_column: team
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from .catalog import load_catalog_task
from .files import load_file_task, load_hf_task, user_path
from .spec import TaskData, check_name


@dataclass
class Sequence:
    """A named, ordered list of tasks."""

    name: str
    tasks: list[TaskData]
    source: str

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


def builtin_sequences() -> list[str]:
    """Names of the sequences shipped with the package."""
    folder = resources.files("adaptive_learner").joinpath("sequences")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_sequence(ref: str) -> Sequence:
    """A built-in sequence by name, or a YAML file by path."""
    path = user_path(ref)
    if ref in builtin_sequences():
        text = resources.files("adaptive_learner").joinpath("sequences", f"{ref}.yaml").read_text("utf-8")
        base, source = Path.cwd(), f"builtin:{ref}"
    elif path.is_file():
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{ref}: not UTF-8 text") from None
        base, source = path.parent, str(path)
    else:
        raise UserError(f"no sequence {ref!r}: not a built-in ({', '.join(builtin_sequences())}) nor a YAML file")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{ref}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return parse_sequence(doc, base, source)


def parse_sequence(doc: Any, base: Path, source: str) -> Sequence:
    """Build a sequence from a parsed YAML document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list) or not doc["tasks"]:
        raise UserError(f"{source}: a sequence needs a non-empty `tasks:` list")
    tasks = [_task_entry(entry, base, source) for entry in doc["tasks"]]
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{source}: task names repeat {dupes}; give repeats their own `name:`")
    return Sequence(name=str(doc.get("name") or Path(source).stem), tasks=tasks, source=source)


KEYS = {"task", "name", "description", "data", "test_data", "hf", "text_columns", "text_column", "label_column",
        "labels", "verbalizers", "template", "family", "label_scoring"}


def _task_entry(entry: Any, base: Path, source: str) -> TaskData:
    mode = entry.get("label_scoring") if isinstance(entry, dict) else None
    if mode is not None and mode not in ("first-token", "mean", "sum"):
        raise UserError(f"{source}: `label_scoring:` is first-token, mean or sum, got {repr(mode)[:40]}")
    task = _task_of(entry, base, source)
    return task.with_label_scoring(mode) if mode is not None else task


def _task_of(entry: Any, base: Path, source: str) -> TaskData:
    if isinstance(entry, str):
        return load_catalog_task(entry)
    if not isinstance(entry, dict):
        raise UserError(f"{source}: each task is a name or a mapping, got {repr(entry)[:80]}")
    unknown = sorted(str(k) for k in entry if k not in KEYS)
    if unknown:
        raise UserError(f"{source}: unknown key(s) {unknown} in a task; known: {', '.join(sorted(KEYS))}")
    for key in ("task", "name", "description", "data", "test_data", "label_column", "family"):
        if key in entry and not (isinstance(entry[key], (str, int, float)) and not isinstance(entry[key], bool)):
            raise UserError(f"{source}: `{key}:` must be a single value, got {repr(entry[key])[:60]}")
    if "task" in entry:
        task = load_catalog_task(str(entry["task"]))
        name = check_name(str(entry.get("name", task.name)))
        return task.renamed(name, str(entry["description"]) if entry.get("description") is not None else None)
    for key in ("name", "description"):
        if entry.get(key) is None or not str(entry[key]).strip():
            raise UserError(f"{source}: a task defined from data needs `{key}:`")
    common = dict(name=check_name(str(entry["name"])), description=str(entry["description"]),
                  text_columns=_as_list(entry.get("text_columns", entry.get("text_column")), source),
                  label_column=str(entry.get("label_column", "label")), family=str(entry.get("family", "unknown")),
                  verbalizers=entry.get("verbalizers"), template=entry.get("template"))
    if "hf" in entry:
        hf = entry["hf"] if isinstance(entry["hf"], dict) else {"path": entry["hf"]}
        if not isinstance(hf.get("path"), str) or not all(isinstance(hf.get(k, ""), str) for k in
                                                           ("name", "train_split", "test_split")):
            raise UserError(f"{source}: `hf:` is a dataset id, or a mapping with `path:` (and `name:`, "
                            f"`train_split:`, `test_split:`)")
        return load_hf_task(hf["path"], config=hf.get("name"), train_split=hf.get("train_split", "train"),
                            test_split=hf.get("test_split", "validation"), **common)
    if "data" not in entry:
        raise UserError(f"{source}: task {entry['name']!r} needs `task:` (built-in), `data:` (file) or `hf:`")
    test = entry.get("test_data")
    return load_file_task(base / str(entry["data"]), labels=entry.get("labels"),
                          test_path=(base / str(test)) if test else None, **common)


def _as_list(v: Any, source: str) -> list[str] | None:
    if v is None:
        return None
    items = v if isinstance(v, list) else [v]
    if not items or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in items):
        raise UserError(f"{source}: `text_columns:` is a column name or a list of them, got {repr(v)[:60]}")
    return [str(x) for x in items]
