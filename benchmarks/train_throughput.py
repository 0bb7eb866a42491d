"""Training throughput: adaptive-learner's trainer vs a plain ``transformers.Trainer`` + peft LoRA.

Same backbone, task, examples, steps, batch size, LoRA config and optimiser settings, in the same
process, alternating A and B for each repeat; also the FLOP bound 4*N*tokens / measured matmul peak.

    python benchmarks/train_throughput.py --backbone smollm2-135m --task sst2 --steps 20 --repeats 3

``--compare OPTION`` (a boolean ``TrainConfig`` field: ``pack``) times our trainer without and with that
option instead, alternating the order in each repeat, and checks that both give the same losses.
``--mix-task`` makes replay-like batches (a part of each replaced by another task's examples);
``--pack-min-saving 0`` packs every batch, however little padding it has:

    python benchmarks/train_throughput.py --backbone smollm2-135m --task sst2 --compare pack --repeats 3
    python benchmarks/train_throughput.py --task sst2 --compare pack --mix-task mrpc --mix-ratio 0.25

``--compare lora-layers`` times every layer adapted (A) against LoRA on the top ``--lora-layers`` layers
only (B): different models, so their losses differ; the step times are the point:

    python benchmarks/train_throughput.py --task sst2 --compare lora-layers --lora-layers 10 --repeats 3

``--compare matmul-precision`` times float32 matrix products at full precision (A) against
``torch.set_float32_matmul_precision("medium")`` (B: on a CPU with AMX or AVX-512 BF16, oneDNN computes the
products from bfloat16-rounded inputs, accumulating in float32; weights, activations between products and
the optimiser stay float32); the step losses differ by that rounding, and the scores on the test examples
are compared too. ``--matmul-precision medium`` runs the comparison against the Trainer with both arms in
that mode:

    python benchmarks/train_throughput.py --task sst2 --compare matmul-precision --repeats 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from adaptive_learner import scoring
from adaptive_learner.adapters import AdapterHost, LoraSettings
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.scoring import accuracy, score
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training import Regulariser, TrainConfig, train_adapter
from common import fmt, machine, matmul_peak_gflops, peak_rss_gb, save, spread


def ours(backbone, items, test, cfg, lora):
    host = AdapterHost(backbone, lora)
    host.create("bench", seed=cfg.seed)
    rep = train_adapter(host, "bench", items, cfg)
    with host.using("bench") as m:
        acc = accuracy(score(m, test, backbone.tokenizer.pad_token_id), test)
    host.delete("bench")
    # positions: the tokens the model computed, padding included and each batch's shared prefix once
    return rep.seconds, rep.examples, rep.tokens, rep.positions, acc


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def reference_trainer(backbone, items, test, cfg, lora, workdir):
    """transformers.Trainer with a peft LoRA: causal-LM loss with -100 on the prompt, dynamic padding."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok = backbone.tokenizer
    rows = []
    for it in items:
        target = it.choices[it.label]
        rows.append({"input_ids": it.prompt + target, "attention_mask": [1] * (len(it.prompt) + len(target)),
                     "labels": [-100] * len(it.prompt) + target})
    torch.manual_seed(cfg.seed)
    model = get_peft_model(backbone.model, lora.to_peft(backbone.model), adapter_name="ref")
    tok.padding_side = "right"
    args = TrainingArguments(output_dir=str(workdir), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps,
                             learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                             lr_scheduler_type="linear" if cfg.schedule == "linear" else "constant_with_warmup", max_grad_norm=cfg.grad_clip, seed=cfg.seed,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             use_cpu=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(rows),
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    tok.padding_side = "left"
    model.eval()
    acc = accuracy(score(model, test, tok.pad_token_id), test)
    backbone.model = model.unload()
    n_ex = cfg.steps * cfg.batch_size
    return seconds, n_ex, acc


class MixIn(Regulariser):
    """Replay-like batches: ``ratio`` of every batch (at least one example) replaced by examples from
    ``pool`` (another task's), as the replay regulariser does with earlier tasks."""

    name = "mix-in"

    def __init__(self, pool, ratio):
        self.pool, self.ratio = pool, ratio

    def mix(self, batch, rng):
        k = min(len(batch) - 1, max(1, int(round(self.ratio * len(batch)))))
        return batch[: len(batch) - k] + [self.pool[i] for i in rng.choice(len(self.pool), size=k)]


def compare(backbone, items, cfg, lora, option, repeats, regularisers=(), lora_b=None, test=None):
    """Our trainer without (A) and with (B) the boolean ``TrainConfig`` field ``option`` (or, with
    ``lora_b``, with those LoRA settings instead of ``lora``; with ``option`` "matmul-precision", B under
    ``torch.set_float32_matmul_precision("medium")``), alternating A-B and B-A over the repeats: per repeat
    the ratio of B's step time to A's (below 1: B is faster), and the largest difference between their step
    losses. With ``test`` examples, each arm's adapter also scores them: the scoring time ratio, the
    accuracies and the largest label log-likelihood difference."""
    precision = option == "matmul-precision"
    configs = {"A": cfg, "B": cfg if lora_b is not None or precision else replace(cfg, **{option: True})}
    loras = {"A": lora, "B": lora_b if lora_b is not None else lora}
    step_s: dict[str, list[float]] = {"A": [], "B": []}
    positions: dict[str, int] = {}
    score_s: dict[str, list[float]] = {"A": [], "B": []}
    acc: dict[str, list[float]] = {"A": [], "B": []}
    ratios, loss_diffs, score_ratios, loglik_diffs = [], [], [], []
    for r in range(repeats):
        losses, logliks = {}, {}
        for arm in ("AB" if r % 2 == 0 else "BA"):
            torch.set_float32_matmul_precision("medium" if precision and arm == "B" else "highest")
            host = AdapterHost(backbone, loras[arm])
            host.create("bench", seed=cfg.seed)
            rep = train_adapter(host, "bench", items, configs[arm], list(regularisers))
            if test is not None:
                with host.using("bench") as m:
                    t0 = time.perf_counter()
                    scored = score(m, test, backbone.tokenizer.pad_token_id)
                    score_s[arm].append(time.perf_counter() - t0)
                acc[arm].append(accuracy(scored, test))
                logliks[arm] = np.concatenate([np.asarray(s, dtype=float).ravel() for s in scored])
            host.delete("bench")
            step_s[arm].append(rep.seconds / rep.steps)
            losses[arm] = rep.losses
            positions[arm] = rep.positions
        torch.set_float32_matmul_precision("highest")
        ratios.append(step_s["B"][-1] / step_s["A"][-1])
        loss_diffs.append(float(np.max(np.abs(np.subtract(losses["A"], losses["B"])))))
        if test is not None:
            score_ratios.append(score_s["B"][-1] / score_s["A"][-1])
            loglik_diffs.append(float(np.max(np.abs(logliks["A"] - logliks["B"]))))
            print(f"repeat {r}: scoring {score_s['A'][-1]:.2f} s without, {score_s['B'][-1]:.2f} s with "
                  f"({score_ratios[-1]:.3f}); accuracy {acc['A'][-1]:.3f} / {acc['B'][-1]:.3f}; largest "
                  f"label log-likelihood difference {loglik_diffs[-1]:.2e}", flush=True)
        print(f"repeat {r}: step {step_s['A'][-1]:.3f} s without {option}, {step_s['B'][-1]:.3f} s with; "
              f"ratio {ratios[-1]:.3f}; largest step-loss difference {loss_diffs[-1]:.2e}", flush=True)
    doc = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "option": option,
           "step_s_without": spread(step_s["A"]), "step_s_with": spread(step_s["B"]),
           "step_time_ratio_with_over_without": spread(ratios), "max_step_loss_difference": max(loss_diffs),
           "positions_without": positions["A"], "positions_with": positions["B"],
           "peak_rss_gb": peak_rss_gb()}
    if score_ratios:
        doc.update(score_s_without=spread(score_s["A"]), score_s_with=spread(score_s["B"]),
                   score_time_ratio_with_over_without=spread(score_ratios), accuracy_without=acc["A"],
                   accuracy_with=acc["B"], max_label_loglik_difference=max(loglik_diffs))
    return doc, f"{option}: step time with / without {fmt(doc['step_time_ratio_with_over_without'], 3)}; " \
                f"positions computed {positions['B']} with, {positions['A']} without; " \
                f"largest step-loss difference {max(loss_diffs):.2e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--task", default="sst2")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-train", type=int, default=256)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lora-layers", type=int, default=10, help="with --compare lora-layers: LoRA on this many top "
                   "decoder layers in B (A: every layer)")
    p.add_argument("--compare", choices=["pack", "lora-layers", "matmul-precision"], default=None,
                   help="time our trainer without and with this TrainConfig option (or LoRA on the top "
                        "--lora-layers layers) instead of against Trainer")
    p.add_argument("--mix-task", default=None, help="with --compare: replace --mix-ratio of every batch by this "
                                                     "task's examples (replay-like batches)")
    p.add_argument("--mix-ratio", type=float, default=0.25)
    p.add_argument("--pack-min-saving", type=float, default=None,
                   help="scoring.PACK_MIN_SAVING (0: pack every batch)")
    p.add_argument("--matmul-precision", default="highest", choices=["highest", "medium"],
                   help="torch.set_float32_matmul_precision for both arms of the comparison against the Trainer")
    p.add_argument("--out", default=None, help="results file name (default train_throughput, or "
                                                 "train_compare_<option>_<task>)")
    a = p.parse_args()
    import tempfile

    backbone = load_backbone(a.backbone)
    task = load_catalog_task(a.task).subsample(a.max_train, a.max_test, 0)
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, max_length=256, seed=0, early_stop=False)
    lora = LoraSettings()
    items = encode_examples(backbone.tokenizer, task.spec, task.train, cfg.max_length)
    test = encode_examples(backbone.tokenizer, task.spec, task.test, cfg.max_length)
    if a.compare:
        if a.pack_min_saving is not None:
            scoring.PACK_MIN_SAVING = a.pack_min_saving
        regs = []
        if a.mix_task:
            other = load_catalog_task(a.mix_task).subsample(a.max_train, 1, 0)
            pool = encode_examples(backbone.tokenizer, other.spec, other.train, cfg.max_length)
            regs.append(MixIn(pool, a.mix_ratio))
        lora_b = LoraSettings(layers=a.lora_layers) if a.compare == "lora-layers" else None
        doc, line = compare(backbone, items, cfg, lora, a.compare, a.repeats, regs, lora_b,
                            test if a.compare == "matmul-precision" else None)
        doc.update(args=vars(a), examples_per_run=a.steps * a.batch_size)
        name = f"train_compare_{a.compare}_{a.task}" + (f"+{a.mix_task}" if a.mix_task else "") + \
            ("" if a.pack_min_saving is None else f"_min{a.pack_min_saving:g}")
        save(a.out or name, doc)
        print(line)
        return
    n_params = sum(p.numel() for p in backbone.model.parameters())
    torch.set_float32_matmul_precision(a.matmul_precision)
    peak = matmul_peak_gflops()
    rows = {"ours_s": [], "ref_s": [], "ours_acc": [], "ref_acc": [], "ratio": [], "bound_ratio": [],
            "bound_ratio_examples": []}
    for r in range(a.repeats):
        s_o, n_o, tok_o, padded_o, acc_o = ours(backbone, items, test, cfg, lora)
        with tempfile.TemporaryDirectory() as wd:
            s_r, n_r, acc_r = reference_trainer(backbone, items, test, cfg, lora, wd)
        # two bounds: for the positions our trainer computed (shared prefixes once, padding included), and
        # for the examples' own tokens, the least any trainer that runs every sequence whole must compute
        bound = 4 * n_params * padded_o / (peak * 1e9)
        bound_examples = 4 * n_params * tok_o / (peak * 1e9)
        rows["bound_ratio_examples"].append(s_o / bound_examples)
        rows["ours_s"].append(s_o)
        rows["ref_s"].append(s_r)
        rows["ours_acc"].append(acc_o)
        rows["ref_acc"].append(acc_r)
        rows["ratio"].append((n_o / s_o) / (n_r / s_r))
        rows["bound_ratio"].append(s_o / bound)
        print(f"repeat {r}: ours {n_o / s_o:.2f} ex/s ({tok_o / s_o:.0f} tok/s, acc {acc_o:.3f}); "
              f"Trainer {n_r / s_r:.2f} ex/s (acc {acc_r:.3f}); ratio {rows['ratio'][-1]:.2f}x; "
              f"time / FLOP bound {rows['bound_ratio'][-1]:.2f} (computed positions), "
              f"{rows['bound_ratio_examples'][-1]:.2f} (example tokens)", flush=True)
    doc = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "n_params": n_params,
           "matmul_peak_gflops": peak, "examples_per_run": a.steps * a.batch_size,
           "ours_examples_per_s": spread([a.steps * a.batch_size / s for s in rows["ours_s"]]),
           "ref_examples_per_s": spread([a.steps * a.batch_size / s for s in rows["ref_s"]]),
           "speedup": spread(rows["ratio"]), "time_over_flop_bound": spread(rows["bound_ratio"]),
           "time_over_flop_bound_example_tokens": spread(rows["bound_ratio_examples"]),
           "ours_acc": spread(rows["ours_acc"]), "ref_acc": spread(rows["ref_acc"]), "peak_rss_gb": peak_rss_gb()}
    save(a.out or "train_throughput", doc)
    print(f"matmul peak {peak:.1f} GFLOP/s; ours {fmt(doc['ours_examples_per_s'])} ex/s; "
          f"Trainer {fmt(doc['ref_examples_per_s'])} ex/s; speedup {fmt(doc['speedup'])}x; "
          f"time/bound {fmt(doc['time_over_flop_bound'])} (computed positions), "
          f"{fmt(doc['time_over_flop_bound_example_tokens'])} (example tokens); acc ours {fmt(doc['ours_acc'], 3)} "
          f"vs Trainer {fmt(doc['ref_acc'], 3)}; peak RSS {doc['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
