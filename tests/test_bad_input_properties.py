"""Bad input, tried widely (hypothesis): data files, task specs and sequence YAML.

Every property is the same contract: a bad input ends in exactly one clear error (``UserError``,
which ``alearn`` prints as one line with exit code 2) and never anything else; a good input gives a
usable task. The command line itself is tried in test_bad_input_cli.py. The number of examples per
property is small for CI (``BAD_INPUT_EXAMPLES`` scales it); benchmarks/reliability_long.py runs more.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import yaml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_learner.errors import UserError
from adaptive_learner.tasks import load_file_task
from adaptive_learner.tasks.sequences import parse_sequence
from bad_input_common import FAST, SCALE, count, no_downloads, outcome, tally  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures"


def _check_task(task) -> None:
    """What a loaded task must be to be usable: labels, verbalizers, non-empty splits and texts."""
    spec = task.spec
    assert len(spec.label_names) >= 2 and len(set(spec.verbalizers)) == len(spec.label_names)
    assert task.train and task.test
    for ex in task.train + task.test:
        assert 0 <= ex.label < len(spec.label_names)
        assert all(isinstance(ex.fields[f], str) and ex.fields[f].strip() for f in spec.input_fields)
    spec.prompt(task.train[0].fields)


def _load(path: Path, **kw):
    try:
        task = load_file_task(path, "t", "Is it good?", **kw)
    except UserError as exc:
        msg = str(exc)
        assert msg.strip() and "\n" not in msg.strip() and "Traceback" not in msg
        outcome(f"error: {msg.split(': ', 1)[-1][:30]}")
        return None
    _check_task(task)
    outcome("loaded a task")
    return task


# --------------------------------------------------------------------------- files
TOY = list(csv.DictReader(io.StringIO((FIXTURES / "toy_sentiment.csv").read_text())))
cells = st.one_of(st.text(max_size=30), st.integers(-3, 5).map(str),
                  st.sampled_from(["", "nan", "NaN", "None", "1.0", "pos", "neg", " ", "\t", "negative", "positive"]))
labels = st.one_of(st.sampled_from(["negative", "positive", "neutral", "0", "1", "2", "", "nan", "1.0", "-1", "True",
                                    " positive"]), st.text(max_size=8))


@st.composite
def tables(draw):
    """The toy table (text, label) with a few mutations: columns dropped, repeated or renamed, cells and labels
    replaced (empty, NaN, unseen, numeric), rows dropped."""
    header = ["text", "label"]
    rows = [[r["text"], r["label"]] for r in TOY[: draw(st.sampled_from([0, 1, 3, 8, 24, 24, 24]))]]
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["cell", "label", "numeric labels", "drop column", "repeat column", "rename"]))
        if what == "cell" and rows:
            rows[draw(st.integers(0, len(rows) - 1))][0] = draw(cells)
        elif what == "label" and rows:
            rows[draw(st.integers(0, len(rows) - 1))][-1] = draw(labels)
        elif what == "numeric labels":
            rows = [r[:-1] + [str(["negative", "positive"].index(r[-1])) if r[-1] in ("negative", "positive")
                              else r[-1]] for r in rows]
        elif what == "drop column" and len(header) > 1:
            k = draw(st.integers(0, len(header) - 1))
            header, rows = header[:k] + header[k + 1:], [r[:k] + r[k + 1:] for r in rows]
        elif what == "repeat column":
            k = draw(st.integers(0, len(header) - 1))
            header, rows = header + [header[k]], [r + [r[k]] for r in rows]
        elif what == "rename":
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(["Text", "", "second", "x"]))
    return header, rows


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@FAST
@given(tables(), st.sampled_from([None, None, ["text"], ["text", "second"], ["nope"]]),
       st.sampled_from(["label", "label", "nope", "text"]),
       st.sampled_from([None, None, ["negative", "positive"], ["0", "1"], ["a"], ["positive", "negative", "x"]]))
def test_csv_tables(table, text_columns, label_column, names):
    count("csv tables")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.csv"
        p.write_text(_csv_text(*table), encoding="utf-8")
        _load(p, text_columns=text_columns, label_column=label_column, labels=names)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.text(max_size=12),
                                     st.floats(allow_nan=True, allow_infinity=True)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=6)


@st.composite
def records(draw):
    """Toy records as JSON objects, a few of them changed: a value of another type, a key missing or added,
    a line that is not an object."""
    recs: list = [{"text": r["text"], "label": r["label"]} for r in TOY[: draw(st.sampled_from([0, 1, 3, 8, 24]))]]
    for _ in range(draw(st.integers(0, 3))):
        if not recs:
            break
        i = draw(st.integers(0, len(recs) - 1))
        what = draw(st.sampled_from(["value", "drop key", "add key", "not an object", "numeric label"]))
        if what == "value" and isinstance(recs[i], dict):
            recs[i][draw(st.sampled_from(["text", "label"]))] = draw(json_values)
        elif what == "drop key" and isinstance(recs[i], dict):
            recs[i].pop(draw(st.sampled_from(["text", "label"])), None)
        elif what == "add key" and isinstance(recs[i], dict):
            recs[i][draw(st.text(max_size=6))] = draw(json_values)
        elif what == "not an object":
            recs[i] = draw(json_values)
        elif isinstance(recs[i], dict):
            recs[i]["label"] = draw(st.sampled_from([0, 1, 2, 1.0, -1, True, None]))
    return recs


@FAST
@given(records(), st.booleans())
def test_jsonl_records(recs, trailing_newline):
    count("jsonl records")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.jsonl"
        lines = [json.dumps(r, allow_nan=True) for r in recs]
        p.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")
        _load(p)


@FAST
@given(st.binary(max_size=400), st.sampled_from(["data.csv", "data.tsv", "data.jsonl", "data.json", "data.txt",
                                                 "data.xlsx"]))
def test_random_bytes(blob, name):
    count("random bytes")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(blob)
        _load(p)


@settings(max_examples=int(12 * SCALE), deadline=None)
@given(st.sampled_from(["csv", "jsonl"]), st.integers(100_000, 400_000), st.sampled_from(["text", "header", "label"]))
def test_very_long_lines(kind, length, where):
    count("very long lines")
    long = "w" * length
    header = ["text", "label"] if where != "header" else [long, "label"]
    rows = [[long if where == "text" else "good film", long if where == "label" else ("pos", "neg")[i % 2]]
            for i in range(8)]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"data.{kind}"
        if kind == "csv":
            p.write_text(_csv_text(header, rows), encoding="utf-8")
        else:
            p.write_text("\n".join(json.dumps(dict(zip(header, r))) for r in rows), encoding="utf-8")
        _load(p)


@settings(max_examples=int(20 * SCALE), deadline=None)
@given(st.sampled_from(["latin-1", "utf-16", "cp1252", "utf-32"]), st.sampled_from(["csv", "jsonl"]))
def test_non_utf8(encoding, kind):
    count("non-UTF-8 files")
    text = (FIXTURES / "toy_sentiment.csv").read_text().replace("wonderful", "wönderfül ☃")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"data.{kind}"
        if kind == "jsonl":
            rows = list(csv.DictReader(io.StringIO(text)))
            text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
        try:
            p.write_bytes(text.encode(encoding))
        except UnicodeEncodeError:
            p.write_bytes(text.encode(encoding, errors="replace"))
        assert _load(p) is None or encoding == "latin-1" and "☃" not in text


def test_numeric_and_named_labels_agree(tmp_path):
    """A label column of 0/1 with --labels names, and the same with names in the column, give one task."""
    src = list(csv.DictReader(io.StringIO((FIXTURES / "toy_sentiment.csv").read_text())))
    names = ["negative", "positive"]
    (tmp_path / "num.csv").write_text(_csv_text(["text", "label"], [[r["text"], names.index(r["label"])]
                                                                    for r in src]))
    (tmp_path / "nam.csv").write_text(_csv_text(["text", "label"], [[r["text"], r["label"]] for r in src]))
    a, b = _load(tmp_path / "num.csv", labels=names), _load(tmp_path / "nam.csv", labels=names)
    assert a.spec.label_names == b.spec.label_names == names
    assert [e.label for e in a.train] == [e.label for e in b.train]
    assert _load(tmp_path / "num.csv", labels=["negative"]) is None  # 1 is not an index of one name


# --------------------------------------------------------------------------- task specs and sequences
junk_values = st.one_of(st.none(), st.integers(-2, 3), st.text(max_size=20), st.lists(st.text(max_size=6), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
GOOD = {"name": st.sampled_from(["t1", "t2", "reviews"]), "description": st.sampled_from(["Is it good?", "Sentiment"]),
        "data": st.just("toy.csv"), "text_columns": st.sampled_from([["text"], "text"]),
        "label_column": st.just("label"), "labels": st.just(["negative", "positive"]),
        "verbalizers": st.sampled_from([[" no", " yes"], [" bad", " good"]]),
        "template": st.sampled_from(["Review: {text}\nAnswer:", "{text} ->"]),
        "family": st.sampled_from(["sentiment", "unknown"]), "test_data": st.just("toy.csv"),
        "task": st.sampled_from(["sst2", "no-such-task"]), "hf": st.just("user/dataset")}
BAD_SPEC = {"template": st.sampled_from(["{text} {other}", "{0}", "{text", "{text.x}", "{text!z}", "{{text}}",
                                         "no field", "{text[0]}", "{}"]),
            "verbalizers": st.sampled_from([[" same", " same"], [" one"], [], [" a", ""], ["", ""], [1, 2]]),
            "labels": st.sampled_from([["negative"], ["neg", "pos"], [], ["negative", "positive", "negative"]]),
            "data": st.sampled_from(["missing.csv", "../toy.csv", "/", ""]), "name": st.sampled_from(["../x", "", "a/b"])}


@st.composite
def task_entries(draw):
    """A task defined from a file, mostly right: each field good, missing, junk, or a known-bad value."""
    entry = {}
    for key in ["name", "description", "data", "text_columns", "label_column", "labels", "verbalizers", "template",
                "family", "test_data", "task", "hf"]:
        how = draw(st.sampled_from(["good"] * 4 + ["missing"] * 3 + ["junk", "bad"]))
        if how == "good" and key not in ("task", "hf", "test_data") or how == "good" and draw(st.booleans()):
            entry[key] = draw(GOOD[key])
        elif how == "junk":
            entry[key] = draw(junk_values)
        elif how == "bad" and key in BAD_SPEC:
            entry[key] = draw(BAD_SPEC[key])
    return entry


@FAST
@given(st.one_of(st.lists(st.one_of(task_entries(), task_entries(), task_entries(), junk_values), min_size=1,
                          max_size=3), st.lists(task_entries(), min_size=1, max_size=2), junk_values))
def test_sequence_documents(tasks):
    count("sequence documents")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "toy.csv").write_text((FIXTURES / "toy_sentiment.csv").read_text())
        try:
            seq = parse_sequence({"name": "s", "tasks": tasks}, Path(d), "seq.yaml")
        except UserError as exc:
            assert str(exc).strip() and "\n" not in str(exc).strip()
            outcome(f"error: {str(exc).split(': ', 1)[-1][:30]}")
            return
        outcome("loaded a sequence")
        for t in seq.tasks:
            _check_task(t)


@FAST
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 json_values.map(lambda v: yaml.safe_dump(v).encode())))
def test_sequence_files(blob):
    count("sequence files")
    from adaptive_learner.tasks import load_sequence

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "seq.yaml"
        p.write_bytes(blob)
        try:
            load_sequence(str(p))
        except UserError as exc:
            assert str(exc).strip()
