"""cProfile of score_routed: 64 test inputs of a catalog task (default sst2), one fresh adapter, batches of
8, one thread; prints the seconds and the 22 most expensive functions by own time (issue 14).

    cd benchmarks && python profile_scoring.py sst2
"""
import cProfile, pstats, time, torch, sys
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.prompting import encode_examples
from adaptive_learner.router.inference import score_routed
from adaptive_learner.tasks import load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
torch.set_num_threads(1)
bb = load_backbone("smollm2-135m"); host = AdapterHost(bb)
host.create("a", seed=0)
task = sys.argv[1] if len(sys.argv) > 1 else "sst2"
t = load_catalog_task(task)
ex = stratified_take(t.test, 64, 2)
items = encode_examples(bb.tokenizer, t.spec, ex, 256)
host.model.eval()
score_routed(host, items[:8], ["a"]*8, [task]*8, 8)
pr = cProfile.Profile(); pr.enable()
t0=time.perf_counter(); score_routed(host, items, ["a"]*len(items), [task]*len(items), 8); print("s", time.perf_counter()-t0)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(22)
