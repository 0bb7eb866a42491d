"""Task specs, user-file loading with its errors, splits and sequences."""

from pathlib import Path

import pytest

from adaptive_learner.errors import UserError
from adaptive_learner.tasks import TaskSpec, load_file_task
from adaptive_learner.tasks.sequences import builtin_sequences, load_sequence, parse_sequence
from adaptive_learner.tasks.spec import Example, stratified_split, stratified_take

from conftest import FIXTURES


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_csv_task_loads_with_stratified_recorded_split(toy_task):
    assert toy_task.spec.label_names == ["negative", "positive"]
    assert toy_task.spec.splits["seed"] == 1234 and toy_task.spec.splits["kind"] == "stratified"
    assert len(toy_task.train) + len(toy_task.test) == 80
    assert abs(sum(e.label for e in toy_task.test) - len(toy_task.test) / 2) <= 1


def test_jsonl_pairs_with_numeric_labels():
    t = load_file_task(FIXTURES / "toy_pairs.jsonl", "pairs", "Same word?", ["first", "second"], "same")
    assert t.spec.input_fields == ["first", "second"] and t.spec.label_names == ["0", "1"]
    assert "{first}" in t.spec.template and "{second}" in t.spec.template


def test_numeric_label_column_maps_onto_given_names(tmp_path):
    p = write(tmp_path, "d.csv", "text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(10)))
    t = load_file_task(p, "t", "desc", labels=["neg", "pos"])
    assert {e.label for e in t.train + t.test} == {0, 1}


@pytest.mark.parametrize("column,cue", [("sentiment", "Sentiment:"), ("is_spam", "Is spam:"), ("label", "Answer:"),
                                        ("Target", "Answer:"), ("y", "Answer:"), ("42", "Answer:"),
                                        ("sentiment_label", "Sentiment:"), ("label_id", "Answer:"),
                                        ("isSpam", "Is spam:"), ("sentimentLabel", "Sentiment:"),
                                        ("HTTP_status", "HTTP status:")])
def test_the_default_prompt_ends_in_the_label_columns_name_where_it_names_what_is_asked(tmp_path, column, cue):
    p = write(tmp_path, "d.csv", f"text,{column}\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(10)))
    t = load_file_task(p, "t", "desc", label_column=column)
    assert t.spec.template == "Text: {text}\n" + cue
    assert t.spec.prompt({"text": "hello"}) == "desc\nText: hello\n" + cue


def test_a_camel_case_text_column_reads_as_words_in_the_default_prompt(tmp_path):
    p = write(tmp_path, "d.csv", "reviewText,summary_line,overall\n"
              + "".join(f"row {i},s {i},{'ab'[i % 2]}\n" for i in range(10)))
    t = load_file_task(p, "t", "desc", text_columns=["reviewText", "summary_line"], label_column="overall")
    assert t.spec.template == "Review text: {reviewText}\nSummary line: {summary_line}\nOverall:"


@pytest.mark.parametrize("content,kwargs,message", [
    (None, {}, "not found"),
    ("text,label\n", {}, "no rows"),
    ("words,label\na,x\nb,y\n", {"text_columns": ["text"]}, "missing column"),
    ("text,tag\na,x\nb,y\n", {}, "missing column"),
    ("text,label\na,x\n ,y\nc,x\nd,y\n", {}, "empty text"),
    ("text,label\na,x\nb,y\nc,z\nd,x\n", {"labels": ["x", "y"]}, "not one of the labels"),
    ("text,label\na,x\nb,\nc,x\nd,y\n", {}, "label is missing"),
    ("text,label\na,x\nb,x\nc,x\nd,x\n", {}, "single value"),
    (b"text,label\n\xff\xfe,x\n", {}, "UTF-8"),
    ("text,text\na,b\n", {}, "duplicate"),
])
def test_bad_files_give_one_clear_error(tmp_path, content, kwargs, message):
    path = tmp_path / "missing.csv" if content is None else write(tmp_path, "d.csv", content)
    with pytest.raises(UserError, match=message):
        load_file_task(path, "t", "describe it", **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"description": "  "}, "description is empty"),
    ({"label_names": ["only"], "verbalizers": [" only"]}, "at least two labels"),
    ({"verbalizers": [" a", " a"]}, "verbalizers must differ"),
    ({"template": "no field here"}, "does not use input field"),
    ({"name": "../etc"}, "invalid task name"),
    ({"name": "a/b"}, "invalid task name"),
])
def test_spec_validation(kwargs, message):
    base = dict(name="t", description="d", family="f", input_fields=["text"], template="T: {text}\nA:",
                label_names=["a", "b"], verbalizers=[" a", " b"])
    with pytest.raises(UserError, match=message):
        TaskSpec(**{**base, **kwargs})


def test_spec_round_trips(toy_task):
    assert TaskSpec.from_dict(toy_task.spec.to_dict()) == toy_task.spec


def test_split_and_subsample_are_deterministic_and_stratified():
    rows = [Example({"text": str(i)}, int(i % 3 == 0)) for i in range(90)]
    a, b = stratified_split(rows, 0.3, 7), stratified_split(rows, 0.3, 7)
    assert [r.fields for r in a[1]] == [r.fields for r in b[1]]
    assert sum(r.label for r in a[1]) == 9  # 30 of 90 are positive; 30% of them
    sub = stratified_take(rows, 30, 3)
    assert len(sub) == 30 and sum(r.label for r in sub) == 10
    assert [r.fields for r in sub] == [r.fields for r in stratified_take(rows, 30, 3)]


def test_builtin_sequences_listed():
    assert {"seed", "revisit7"} <= set(builtin_sequences())


def test_sequence_yaml_with_user_files(tmp_path):
    (tmp_path / "toy.csv").write_text((FIXTURES / "toy_sentiment.csv").read_text())
    y = write(tmp_path, "seq.yaml", "name: mine\ntasks:\n  - name: toy\n    data: toy.csv\n"
                                    "    description: Is the review positive?\n    family: sentiment\n")
    seq = load_sequence(str(y))
    assert seq.name == "mine" and seq.task_names == ["toy"] and seq.tasks[0].spec.family == "sentiment"


@pytest.mark.parametrize("doc,message", [
    ({}, "non-empty `tasks:`"),
    ({"tasks": []}, "non-empty `tasks:`"),
    ({"tasks": [42]}, "a name or a mapping"),
    ({"tasks": [{"name": "x"}]}, "needs `description:`"),
    ({"tasks": [{"name": "x", "description": "d"}]}, "needs `task:`"),
    ({"tasks": ["no_such_task"]}, "unknown task"),
])
def test_bad_sequences(doc, message, tmp_path):
    with pytest.raises(UserError, match=message):
        parse_sequence(doc, tmp_path, "test.yaml")


@pytest.mark.parametrize("template", ['""', "'   '"])
def test_an_empty_template_in_a_sequence_file_is_refused_not_replaced_by_the_default(tmp_path, template):
    (tmp_path / "toy.csv").write_text((FIXTURES / "toy_sentiment.csv").read_text())
    y = write(tmp_path, "seq.yaml", "name: mine\ntasks:\n  - name: toy\n    data: toy.csv\n"
                                    f"    description: Is the review positive?\n    template: {template}\n")
    with pytest.raises(UserError, match="template is empty"):
        load_sequence(str(y))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="invalid YAML"):
        load_sequence(str(write(tmp_path, "bad.yaml", "tasks: [a, b\n")))
    with pytest.raises(UserError, match="no sequence"):
        load_sequence(str(tmp_path / "nope.yaml"))
