"""Strategy `router` on the tiny backbone: decisions, regularisers on reuse, both evaluation modes."""

import pytest

from adaptive_learner.evaluation.harness import RunConfig, run_sequence
from adaptive_learner.training import Regulariser, TrainConfig

from conftest import FIXTURES


@pytest.fixture(scope="module")
def revisit_sequence(tmp_path_factory):
    p = tmp_path_factory.mktemp("seq") / "revisit.yaml"
    toy = (f"    data: {FIXTURES / 'toy_sentiment.csv'}\n"
           f"    description: Is the review positive or negative?\n    family: sentiment\n")
    p.write_text(f"name: revisit\ntasks:\n  - name: toy\n{toy}"
                 f"  - name: pairs\n    data: {FIXTURES / 'toy_pairs.jsonl'}\n"
                 f"    description: Do the two phrases mean the same?\n"
                 f"    text_columns: [first, second]\n    label_column: same\n    family: paraphrase\n"
                 f"  - name: toy_again\n{toy}")
    return str(p)


def run(sequence, out, **options):
    cfg = RunConfig(sequence=sequence, strategy="router", backbone="tiny-random", max_train=40, max_test=8,
                    train=TrainConfig(steps=3, batch_size=4, lr=1e-2, max_length=64, early_stop=False),
                    options={"ewc_samples": 4, "replay_buffer_size": 8, **options})
    return run_sequence(cfg, out)


@pytest.fixture(scope="module")
def result(revisit_sequence, tmp_path_factory):
    return run(revisit_sequence, tmp_path_factory.mktemp("run"))


def test_router_creates_for_new_tasks_and_reuses_for_the_revisit(result):
    d = result.info["router"]["decisions"]
    assert [x["action"] for x in d] == ["new", "new", "reuse"]
    assert d[2]["adapter"] == d[0]["adapter"] == "lora-toy"
    assert result.info["n_adapters"] == 2 and not (result.matrix[-1] != result.matrix[-1]).any()


def test_reuse_trains_under_ewc_and_replay_by_default(result):
    d = result.info["router"]["decisions"]
    assert {"ewc", "replay"} <= set(d[2]["regularisers"])


def test_both_evaluation_modes_are_reported(result):
    inferred = result.info["router"]["task_inferred"]
    assert set(inferred["per_task"]) == {"toy", "pairs", "toy_again"}
    assert 0.0 <= inferred["avg_acc"] <= 1.0 and 0.0 <= inferred["routing_accuracy"] <= 1.0
    # pairs inputs have two fields: only the pair task takes them
    assert inferred["per_task"]["pairs"]["routing_accuracy"] == 1.0
    # the task-inferred row's scoring is timed apart from the task-id evaluation, inside the total
    t = result.info["timings_s"]
    # (each figure is rounded to 0.1 s: the parts may add up to 0.15 s more than the rounded total, 4.4 + 0.2 + 0.4
    # once summed to 5.000000000000001 against 5.0)
    assert t["finish"] > 0 and t["train"] + t["eval"] + t["finish"] <= t["total"] + 0.15 + 1e-9


class Counting(Regulariser):
    """Records the calls it gets."""

    name = "counting"

    def __init__(self, log, adapter, task, gain):
        self.log, self.entry = log, (adapter, task.name, gain)

    def begin(self, host, adapter):
        self.log.append(("begin", *self.entry))


def test_custom_regulariser_factories_are_called_with_the_routers_confidence(revisit_sequence, tmp_path):
    log = []
    res = run(revisit_sequence, tmp_path, regularisers=[lambda a, t, g: Counting(log, a, t, g)])
    d = res.info["router"]["decisions"]
    assert [e[1:3] for e in log] == [("lora-toy", "toy"), ("lora-pairs", "pairs"), ("lora-toy", "toy_again")]
    assert log[0][3] == 1.0 and log[2][3] == pytest.approx(d[2]["confidence"], abs=1e-4)
    assert d[2]["regularisers"] == ["counting"]


def test_softmax_threshold_baseline_runs_as_a_strategy_option(revisit_sequence, tmp_path):
    res = run(revisit_sequence, tmp_path, router="softmax-threshold", router_forgetting=False)
    d = res.info["router"]["decisions"]
    assert res.info["router"]["kind"] == "softmax-threshold"
    assert d[1]["action"] == "reuse"  # with one adapter, the softmax is 1.0: the original design always reused
