"""Tasks from a user's own CSV/JSONL file, or from the Hugging Face hub (``datasets``)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import UserError
from .spec import Example, TaskData, TaskSpec, stratified_split

_INT = re.compile(r"-?[0-9]{1,18}")  # a label written as a (small) integer
FILE_SPLIT_SEED = 1234
FILE_TEST_FRACTION = 0.3


def user_path(path: str | Path) -> Path:
    """``path`` with a leading ``~`` expanded; left as written when it names no known user (``~nobody``)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or JSONL file into a DataFrame with one clear error for every way it can fail."""
    p = user_path(path)
    if not p.is_file():
        raise UserError(f"data file not found: {path}")
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt"):
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    try:
        df = _read_json(p, path, lines=suffix != ".json") if "json" in suffix else _read_csv(p, path, suffix)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except (ValueError, TypeError, OverflowError, RecursionError, csv.Error, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot parse as {suffix[1:]}: {first[:200]}") from None
    if df.empty:
        raise UserError(f"{path}: no rows")
    if len(set(map(str, df.columns))) != len(df.columns):
        raise UserError(f"{path}: duplicate column names {list(df.columns)}")
    df.columns = [str(c) for c in df.columns]
    return df


def _read_csv(p: Path, path: str | Path, suffix: str) -> pd.DataFrame:
    sep = "\t" if suffix == ".tsv" else ","
    try:
        # the header as written: pandas renames a repeated column ("text.1"), which would hide the mistake
        header = pd.read_csv(p, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None
    names = [str(x) for x in header.iloc[0].tolist()] if len(header) else []
    if len(set(names)) != len(names):
        raise UserError(f"{path}: duplicate column names {names}")
    try:
        return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: no rows") from None


def _read_json(p: Path, path: str | Path, lines: bool) -> pd.DataFrame:
    """JSON Lines (one object per line), or a .json array of objects; the line of a bad record is named."""
    with open(p, encoding="utf-8") as fh:
        if lines:
            records = [(i, _json_line(line, i, path)) for i, line in enumerate(fh, 1) if line.strip()]
        else:
            doc = json.load(fh)
            if not isinstance(doc, list):
                raise UserError(f"{path}: expected a JSON array of objects, one per example")
            records = list(enumerate(doc, 1))
    for i, rec in records:
        if not isinstance(rec, dict):
            raise UserError(f"{path}: {'line' if lines else 'item'} {i} is not a JSON object "
                            f"(got {type(rec).__name__})")
    return pd.DataFrame.from_records([r for _, r in records])


def _json_line(line: str, i: int, path: str | Path) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None


def _label_index(values: Sequence[Any], labels: list[str] | None, path: str) -> tuple[list[int], list[str]]:
    def key(v: Any) -> str:
        if not (v is None or isinstance(v, (str, int, float))):
            raise UserError(f"{path}: label {str(v)[:40]!r} is not a name or a number")
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
        labels = sorted(set(keys), key=lambda s: (0, int(s), s) if _INT.fullmatch(s) else (1, 0, s))
    names = [str(x).strip() for x in labels]
    index = {n: i for i, n in enumerate(names)}
    out = []
    for k in keys:
        if k in index:
            out.append(index[k])
        elif _INT.fullmatch(k) and 0 <= int(k) < len(names) and not any(_INT.fullmatch(n) for n in names):
            out.append(int(k))  # labels given as names, column holds their indices
        else:
            raise UserError(f"{path}: label {k!r} is not one of the labels {names}")
    if len(names) < 2:
        raise UserError(f"{path}: the label column has a single value {names}; a task needs at least two labels")
    return out, names


def rows_from_frame(df: pd.DataFrame, text_columns: list[str], label_column: str, labels: list[str] | None,
                    path: str) -> tuple[list[Example], list[str]]:
    """Examples from a DataFrame, checking columns, empty texts and labels."""
    texts = texts_from_frame(df, text_columns, path, also=[label_column])
    y, names = _label_index(df[label_column].tolist(), labels, path)
    return [Example(texts[i], y[i]) for i in range(len(df))], names


def texts_from_frame(df: pd.DataFrame, text_columns: list[str], path: str,
                     also: Sequence[str] = ()) -> list[dict[str, str]]:
    """Each row's text fields (unlabelled inputs, e.g. for prediction), checking the columns (and ``also``'s
    presence) and that no text is empty."""
    missing = [c for c in [*text_columns, *also] if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; columns are {list(df.columns)}")
    for c in text_columns:
        col = df[c]
        odd = col.map(lambda v: v is not None and not isinstance(v, (str, int, float)) or isinstance(v, bool))
        if odd.any():
            raise UserError(f"{path}: the value in column {c!r} at row {int(odd.to_numpy().argmax()) + 1} is not text")
        empty = col.isna() | (col.astype(str).str.strip() == "")
        if empty.any():
            raise UserError(f"{path}: empty text in column {c!r} at row {int(empty.to_numpy().argmax()) + 1}")
    texts = {c: df[c].astype(str).tolist() for c in text_columns}
    return [{c: texts[c][i] for c in text_columns} for i in range(len(df))]


def check_spec_inputs(where: str, text_columns: list[str], labels: Any, verbalizers: Any, template: Any) -> None:
    """The parts of a task a user writes (columns, labels, verbalizers, template) are usable, or one clear error.

    A text column becomes a ``{placeholder}`` of the prompt template, so its name must be one
    ``str.format`` can fill: no '.', '[', ']', '!', ':', '{', '}' and not only digits.
    """
    for c in text_columns:
        if not isinstance(c, str) or not c.strip() or c.isdigit() or any(ch in c for ch in ".[]!:{}"):
            raise UserError(f"{where}: column {c!r} cannot be a text field (no '.', '[', ']', '!', ':', braces, "
                            f"and not only digits): rename it in the file")
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(x, (str, int)) and str(x).strip() for x in labels):
            raise UserError(f"{where}: labels must be a list of names, got {labels!r}")
        if len({str(x).strip() for x in labels}) != len(labels):
            raise UserError(f"{where}: labels repeat: {labels}")
    if verbalizers is not None and (not isinstance(verbalizers, list)
                                    or not all(isinstance(v, str) and v.strip() for v in verbalizers)):
        raise UserError(f"{where}: verbalizers must be a list of non-empty texts, one per label, got {verbalizers!r}")
    if template is not None:
        try:
            if not isinstance(template, str):
                raise TypeError(f"not text but {type(template).__name__}")
            if not template.strip():
                raise UserError(f"{where}: the template is empty: give the prompt, with each text column as "
                                f"{{column}}, or leave the template out for the default")
            template.format(**{c: "x" for c in text_columns})
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"{where}: template {str(template)[:60]!r} cannot be filled from the text columns "
                            f"{text_columns} ({type(exc).__name__}: {exc})") from None


LABEL_WORDS = frozenset({"label", "labels", "id", "ids", "idx"})  # dropped from a name: sentiment_label -> Sentiment
# what is left of a label column's name that still says nothing of what is asked: the prompt ends in "Answer:"
UNNAMED_LABEL_COLUMNS = frozenset({"target", "targets", "y", "gold", "output", "outputs", "answer", "answers",
                                   "class", "classes"})


def name_words(column: str) -> list[str]:
    """A column's name as words: split at ``_``, ``-``, spaces and camelCase humps (``reviewText`` -> review, text;
    ``isSpam`` -> is, spam); a word that starts a hump is lowercased, an all-capitals word (``URL``) kept."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", " ", str(column).replace("_", " ").replace("-", " "))
    return [w.lower() if w[:1].isupper() and not w.isupper() and i else w for i, w in enumerate(spaced.split())]


def answer_cue(label_column: str) -> str:
    """The last line of a user task's default prompt: the label column's own name where it names what is asked
    (a column ``sentiment``, ``sentiment_label`` or ``sentimentLabel`` gives ``Sentiment:``), else ``Answer:``."""
    name = " ".join(w for w in name_words(label_column) if w.lower() not in LABEL_WORDS)
    if not any(ch.isalpha() for ch in name) or name.lower() in UNNAMED_LABEL_COLUMNS or any(ch in name for ch in "{}"):
        return "Answer:"
    return name[0].upper() + name[1:] + ":"


def default_template(text_columns: list[str], label_column: str = "label") -> str:
    """A plain prompt template for user data: one line per text column, then the answer cue (``answer_cue``)."""
    lines = [f"{' '.join(name_words(c)).capitalize()}: {{{c}}}" for c in text_columns]
    return "\n".join(lines) + "\n" + answer_cue(label_column)


def load_file_task(path: str | Path, name: str, description: str, text_columns: list[str] | None = None,
                   label_column: str = "label", labels: list[str] | None = None,
                   verbalizers: list[str] | None = None, family: str = "unknown", template: str | None = None,
                   test_path: str | Path | None = None, label_scoring: str = "first-token") -> TaskData:
    """A task from a user's CSV/TSV/JSONL file (one text column, or several for sentence pairs).

    Without ``test_path`` the file is split 70/30, stratified, with a fixed seed recorded in the spec.
    """
    df = read_table(path)
    if text_columns is None:
        text_columns = ["text"] if "text" in df.columns else [c for c in df.columns if c != label_column][:1]
    if not text_columns:
        raise UserError(f"{path}: no text column; pass --text-column")
    check_spec_inputs(str(path), text_columns, labels, verbalizers, template)
    rows, names = rows_from_frame(df, text_columns, label_column, labels, str(path))
    if test_path is not None:
        test, _ = rows_from_frame(read_table(test_path), text_columns, label_column, names, str(test_path))
        train, split = rows, {"kind": "given", "train": str(path), "test": str(test_path)}
    else:
        if len(rows) < 4:
            raise UserError(f"{path}: {len(rows)} rows; at least 4 are needed to split train and test")
        train, test = stratified_split(rows, FILE_TEST_FRACTION, FILE_SPLIT_SEED)
        if not test:
            raise UserError(f"{path}: too few rows per label to hold out a test split; give at least two "
                            f"examples of some label, or a separate test file")
        split = {"kind": "stratified", "from": str(path), "test_fraction": FILE_TEST_FRACTION, "seed": FILE_SPLIT_SEED}
    verbalizers = verbalizers or [" " + n.replace("_", " ") for n in names]
    spec = TaskSpec(name=name, description=description, family=family, input_fields=list(text_columns),
                    template=template or default_template(list(text_columns), label_column), label_names=names,
                    verbalizers=verbalizers, source=f"file:{path}", splits=split, label_scoring=label_scoring)
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
    check_spec_inputs(dataset, text_columns, None, verbalizers, template)
    feat = ds[train_split].features.get(label_column)
    labels = list(getattr(feat, "names", []) or []) or None
    train, names = rows_from_frame(ds[train_split].to_pandas(), text_columns, label_column, labels, dataset)
    test, _ = rows_from_frame(ds[test_split].to_pandas(), text_columns, label_column, names, dataset)
    spec = TaskSpec(name=name, description=description, family=family, input_fields=list(text_columns),
                    template=template or default_template(list(text_columns), label_column), label_names=names,
                    verbalizers=verbalizers or [" " + n for n in names], source=f"hf:{dataset}",
                    splits={"kind": "given", "train": train_split, "test": test_split})
    return TaskData(spec, train, test)
