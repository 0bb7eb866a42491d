"""Tasks from a user's own CSV/JSONL file, or from the Hugging Face hub (``datasets``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import UserError
from .spec import Example, TaskData, TaskSpec, stratified_split

FILE_SPLIT_SEED = 1234
FILE_TEST_FRACTION = 0.3


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or JSONL file into a DataFrame with one clear error for every way it can fail."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"data file not found: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False, encoding="utf-8")
        elif suffix == ".json":
            df = pd.read_json(p, dtype=False, encoding="utf-8")
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                             na_values=[""], encoding="utf-8")
        else:
            raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    except UserError:
        raise
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot parse as {suffix[1:]}: {first}") from None
    if df.empty:
        raise UserError(f"{path}: no rows")
    if suffix in (".csv", ".tsv", ".txt"):
        import csv

        with open(p, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), [])
        if len(set(header)) != len(header):
            raise UserError(f"{path}: duplicate column names {header}")
    if len(set(map(str, df.columns))) != len(df.columns):
        raise UserError(f"{path}: duplicate column names {list(df.columns)}")
    df.columns = [str(c) for c in df.columns]
    return df


def _label_index(values: Sequence[Any], labels: list[str] | None, path: str) -> tuple[list[int], list[str]]:
    def key(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                raise UserError(f"{path}: a label is missing (empty or NaN)")
            if v.is_integer():
                v = int(v)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise UserError(f"{path}: a label is missing (empty or NaN)")
        return str(v).strip()

    keys = [key(v) for v in values]
    if labels is None:
        uniq = sorted(set(keys), key=lambda s: (0, int(s)) if s.lstrip("-").isdigit() else (1, s))
        labels = uniq
    names = [str(x) for x in labels]
    index = {n: i for i, n in enumerate(names)}
    out = []
    for k in keys:
        if k in index:
            out.append(index[k])
        elif k.lstrip("-").isdigit() and 0 <= int(k) < len(names) and not any(n.isdigit() for n in names):
            out.append(int(k))  # labels given as names, column holds their indices
        else:
            raise UserError(f"{path}: label {k!r} is not one of the labels {names}")
    if len(names) < 2:
        raise UserError(f"{path}: the label column has a single value {names}; a task needs at least two labels")
    return out, names


def rows_from_frame(df: pd.DataFrame, text_columns: list[str], label_column: str, labels: list[str] | None,
                    path: str) -> tuple[list[Example], list[str]]:
    """Examples from a DataFrame, checking columns, empty texts and labels."""
    missing = [c for c in [*text_columns, label_column] if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; columns are {list(df.columns)}")
    for c in text_columns:
        col = df[c]
        empty = col.isna() | (col.astype(str).str.strip() == "")
        if empty.any():
            raise UserError(f"{path}: empty text in column {c!r} at row {int(empty.to_numpy().argmax()) + 1}")
    y, names = _label_index(df[label_column].tolist(), labels, path)
    texts = {c: df[c].astype(str).tolist() for c in text_columns}
    return [Example({c: texts[c][i] for c in text_columns}, y[i]) for i in range(len(df))], names


def default_template(text_columns: list[str]) -> str:
    """A plain prompt template for user data: one line per text column, then ``Answer:``."""
    lines = [f"{c.replace('_', ' ').capitalize()}: {{{c}}}" for c in text_columns]
    return "\n".join(lines) + "\nAnswer:"


def load_file_task(path: str | Path, name: str, description: str, text_columns: list[str] | None = None,
                   label_column: str = "label", labels: list[str] | None = None,
                   verbalizers: list[str] | None = None, family: str = "unknown", template: str | None = None,
                   test_path: str | Path | None = None) -> TaskData:
    """A task from a user's CSV/TSV/JSONL file (one text column, or several for sentence pairs).

    Without ``test_path`` the file is split 70/30, stratified, with a fixed seed recorded in the spec.
    """
    df = read_table(path)
    if text_columns is None:
        text_columns = ["text"] if "text" in df.columns else [c for c in df.columns if c != label_column][:1]
    if not text_columns:
        raise UserError(f"{path}: no text column; pass --text-column")
    rows, names = rows_from_frame(df, text_columns, label_column, labels, str(path))
    if test_path is not None:
        test, _ = rows_from_frame(read_table(test_path), text_columns, label_column, names, str(test_path))
        train, split = rows, {"kind": "given", "train": str(path), "test": str(test_path)}
    else:
        if len(rows) < 4:
            raise UserError(f"{path}: {len(rows)} rows; at least 4 are needed to split train and test")
        train, test = stratified_split(rows, FILE_TEST_FRACTION, FILE_SPLIT_SEED)
        split = {"kind": "stratified", "from": str(path), "test_fraction": FILE_TEST_FRACTION, "seed": FILE_SPLIT_SEED}
    verbalizers = verbalizers or [" " + n.replace("_", " ") for n in names]
    spec = TaskSpec(name=name, description=description, family=family, input_fields=list(text_columns),
                    template=template or default_template(list(text_columns)), label_names=names,
                    verbalizers=verbalizers, source=f"file:{path}", splits=split)
    return TaskData(spec, train, test)


def load_hf_task(dataset: str, name: str, description: str, text_columns: list[str], label_column: str = "label",
                 config: str | None = None, train_split: str = "train", test_split: str = "validation",
                 family: str = "unknown", verbalizers: list[str] | None = None,
                 template: str | None = None) -> TaskData:
    """A task from the Hugging Face hub through ``datasets`` (needs hub access and ``pip install datasets``)."""
    try:
        import datasets
    except ImportError:
        raise UserError("loading from the Hugging Face hub needs `pip install datasets`") from None
    try:
        ds = datasets.load_dataset(dataset, config)
    except Exception as exc:  # hub, network and config errors all end here
        raise UserError(f"cannot load dataset {dataset!r}: {str(exc).splitlines()[0]}") from None
    feat = ds[train_split].features.get(label_column)
    labels = list(getattr(feat, "names", []) or []) or None
    train, names = rows_from_frame(ds[train_split].to_pandas(), text_columns, label_column, labels, dataset)
    test, _ = rows_from_frame(ds[test_split].to_pandas(), text_columns, label_column, names, dataset)
    spec = TaskSpec(name=name, description=description, family=family, input_fields=list(text_columns),
                    template=template or default_template(list(text_columns)), label_names=names,
                    verbalizers=verbalizers or [" " + n for n in names], source=f"hf:{dataset}",
                    splits={"kind": "given", "train": train_split, "test": test_split})
    return TaskData(spec, train, test)
