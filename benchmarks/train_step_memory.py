"""Peak RSS of a few training steps on BoolQ: python benchmarks/train_step_memory.py MAX_LENGTH MAX_BATCH_TOKENS"""
import resource, sys, torch
torch.set_num_threads(2)
from adaptive_learner.backbone import load_backbone
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.prompting import encode_examples
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.training import TrainConfig, train_adapter
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6
b = load_backbone("smollm2-135m"); print("load", rss())
t = load_catalog_task("boolq").subsample(64, 16, 0); print("data", rss())
host = AdapterHost(b); host.create("x")
items = encode_examples(b.tokenizer, t.spec, t.train, int(sys.argv[1]))
cfg = TrainConfig(steps=3, batch_size=8, max_length=int(sys.argv[1]), max_batch_tokens=int(sys.argv[2]), early_stop=False)
rep = train_adapter(host, "x", items, cfg); print("train", rss(), rep.seconds)
