"""cProfile of LibraryRouter.route on 32 sst2 test inputs over an 11-task library (profiles of 32 examples,
one fresh adapter per task), closed set then open set, 5 calls each, one thread (issue 13, item 5).

    cd benchmarks && python profile_routing.py
"""
import cProfile, pstats, time, torch, numpy as np, sys
sys.path.insert(0, '.')
from adaptive_learner.adapters import AdapterHost
from adaptive_learner.backbone import load_backbone
from adaptive_learner.features import FeatureConfig, input_text
from adaptive_learner.router.evidence import TaskProfile
from adaptive_learner.router.service import LibraryRouter
from adaptive_learner.tasks import catalog_names, load_catalog_task
from adaptive_learner.tasks.spec import stratified_take
torch.set_num_threads(1)
host = AdapterHost(load_backbone("smollm2-135m"))
router = LibraryRouter(host, features=FeatureConfig())
profiles, tasks = [], {}
for name in catalog_names():
    t = load_catalog_task(name); tasks[name] = t
    feats = router.extractor.task_features(t.spec, stratified_take(t.train, 32, 1), 256)
    host.create(f"lora-{name}", seed=0)
    profiles.append(TaskProfile(name, f"lora-{name}", feats))
router.route(["warm-up"], profiles)
t = tasks["sst2"]
texts = [input_text(e.fields, t.spec) for e in stratified_take(t.test, 32, 2)]
for os_ in (False, True):
    router.route(texts, profiles, open_set=os_)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5): router.route(texts, profiles, open_set=os_)
    pr.disable()
    print("open_set", os_)
    pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
