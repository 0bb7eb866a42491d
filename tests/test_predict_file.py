"""alearn predict --data: a file's rows as inputs (task given or routed), printed or written with --out."""

import json

import pandas as pd
import pytest

from conftest import FIXTURES, TOY, make_toy_library, run_alearn, tree_digest

TRAIN = ["--steps", "2", "--max-length", "48", "--batch-size", "4", "--no-head"]
PAIRS = str(FIXTURES / "toy_pairs.jsonl")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """toy (one text column) and pairs (two columns, first/second) in one library."""
    lib = make_toy_library(tmp_path_factory.mktemp("predict-file") / "lib", "--backbone", "tiny-random", *TRAIN)
    code, _, err = run_alearn("learn", "--library", lib, "--data", PAIRS, "--description", "Same meaning?",
                              "--name", "pairs", "--text-column", "first", "--text-column", "second",
                              "--label-column", "same", "--force-new", *TRAIN)
    assert code == 0, err
    return lib


def _lines(out):
    return [line.split("\t") for line in out.strip().splitlines()]


def test_a_files_rows_get_the_answers_their_texts_get(lib):
    rows = pd.read_csv(TOY)
    code, out, err = run_alearn("predict", "--library", lib, "--task", "toy", "--data", TOY)
    assert code == 0, err
    got = _lines(out)
    assert len(got) == 80 and [g[-1] for g in got] == rows["text"].tolist()
    code, out, _ = run_alearn("predict", "--library", lib, "--task", "toy", *rows["text"][:5])
    assert _lines(out) == got[:5]


def test_out_writes_every_row_with_its_answer_in_each_format(lib, tmp_path):
    code, out, err = run_alearn("predict", "--library", lib, "--task", "toy", "--data", TOY, "--json")
    answers = [json.loads(line) for line in out.splitlines()]
    for suffix in (".csv", ".tsv", ".jsonl"):
        dest = tmp_path / f"answers{suffix}"
        code, out, err = run_alearn("predict", "--library", lib, "--task", "toy", "--data", TOY, "--out", dest)
        assert code == 0, err
        assert out.strip() == f"80 answers written to {dest}"
        table = (pd.read_json(dest, lines=True) if suffix == ".jsonl"
                 else pd.read_csv(dest, sep="\t" if suffix == ".tsv" else ","))
        assert list(table.columns) == ["text", "label", "predicted_label", "confidence", "task", "adapter"]
        assert table["text"].tolist() == pd.read_csv(TOY)["text"].tolist()  # the input's rows, in order
        assert table["predicted_label"].tolist() == [a["label"] for a in answers]
        assert table["confidence"].tolist() == pytest.approx([a["confidence"] for a in answers], abs=1e-6)
        assert set(table["task"]) == {"toy"} and set(table["adapter"]) == {"lora-toy"}


def test_routed_rows_carry_the_route_and_pair_tasks_read_their_own_columns(lib, tmp_path):
    dest = tmp_path / "routed.csv"
    code, _, err = run_alearn("predict", "--library", lib, "--data", TOY, "--out", dest, "--no-abstain")
    assert code == 0, err
    table = pd.read_csv(dest)
    assert {"route_confidence", "novelty", "nearest_label"} <= set(table.columns)
    assert set(table["task"]) <= {"toy", "pairs"} and table["route_confidence"].between(0, 1).all()
    # a pair task's file: its columns by default, joined as predict's 'first ||| second'
    code, out, err = run_alearn("predict", "--library", lib, "--task", "pairs", "--data", PAIRS)
    assert code == 0, err
    first = json.loads(open(PAIRS).readline())
    code, one, _ = run_alearn("predict", "--library", lib, "--task", "pairs", f"{first['first']} ||| {first['second']}")
    assert _lines(out)[0][:2] == _lines(one)[0][:2] and len(_lines(out)) == 40
    # other column names, mapped in order
    renamed = tmp_path / "renamed.csv"
    pd.read_json(PAIRS, lines=True).rename(columns={"first": "a", "second": "b"}).to_csv(renamed, index=False)
    code, again, err = run_alearn("predict", "--library", lib, "--task", "pairs", "--data", renamed,
                                  "--text-column", "a", "--text-column", "b")
    assert code == 0, err
    assert [x[:2] for x in _lines(again)] == [x[:2] for x in _lines(out)]


def test_chunks_answer_as_one_call_does(lib):
    from adaptive_learner.cli import _predict_in_chunks
    from adaptive_learner.learner import Learner

    texts = pd.read_csv(TOY)["text"].tolist()[:30]
    learner = Learner(lib, create=False)
    whole = learner.predict(texts, "toy")
    chunked = _predict_in_chunks(learner, texts, "toy", abstain=True, progress=False, chunk=7)
    assert [p.label for p in chunked] == [p.label for p in whole] and [p.text for p in chunked] == texts
    assert [p.confidence for p in chunked] == pytest.approx([p.confidence for p in whole], abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--task", "toy", "some text", "--data", TOY], "one of them"),
    (["--task", "toy"], "one of them"),
    (["--task", "toy", "some text", "--out", "x.csv"], "are for --data"),
    (["--task", "toy", "some text", "--text-column", "text"], "are for --data"),
    (["--task", "toy", "--data", TOY, "--out", "answers.txt"], ".csv, .tsv, .jsonl"),
    (["--task", "ghost", "--data", TOY], "no task 'ghost'"),
    (["--data", PAIRS], "missing column(s) ['text']"),
    (["--task", "pairs", "--data", PAIRS, "--text-column", "first"], "reads 2 text field(s)"),
    (["--task", "toy", "--data", "CLASH"], "would be overwritten"),
    (["--task", "toy", "--data", "/nonexistent.csv"], "not found"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(lib, tmp_path, args, message):
    clash = tmp_path / "clash.csv"
    pd.DataFrame({"text": ["a", "b"], "task": ["x", "y"]}).to_csv(clash, index=False)
    args = [str(clash) if a == "CLASH" else a for a in args]
    args = [str(tmp_path / a) if a in ("x.csv", "answers.txt") else a for a in args]
    before = tree_digest(lib)
    code, _, err = run_alearn("predict", "--library", lib, *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree_digest(lib) == before and not any(p.name.startswith(("x.", "answers")) for p in tmp_path.iterdir())
