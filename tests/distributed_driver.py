"""Run under `accelerate launch --multi_gpu --num_processes 2`: trains a tiny adapter data-parallel and
saves each rank's final LoRA weights, so the test can check that the ranks stayed in sync."""

import sys
from pathlib import Path

from safetensors.torch import save_file

from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.evaluation.distributed import maybe_accelerator
from adaptive_learner.prompting import encode_examples
from adaptive_learner.tasks import load_file_task
from adaptive_learner.training import TrainConfig, train_adapter

out = Path(sys.argv[1])
acc = maybe_accelerator()
assert acc is not None and acc.num_processes == 2
bb = load_backbone("tiny-random")
task = load_file_task(Path(__file__).parent / "fixtures" / "toy_sentiment.csv", "toy", "Positive?")
host = AdapterHost(bb)
host.create("toy", seed=0)
items = encode_examples(bb.tokenizer, task.spec, task.train, 64)
rep = train_adapter(host, "toy", items, TrainConfig(steps=4, batch_size=8, lr=1e-2, early_stop=False), accelerator=acc)
save_file({k: v.contiguous() for k, v in host.state("toy").items()}, str(out / f"rank{acc.process_index}.safetensors"))
print(f"rank {acc.process_index} examples {rep.examples}")
