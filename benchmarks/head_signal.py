"""Would the head's out-of-fold accuracy over the training part, set against the adapter's held-out accuracy,
tell where mixing the head in costs (rotten_tomatoes) from where it pays (stsb, mrpc, recommend)? Read from
the arrays ``per_task_quality.py --dump`` keeps (the same ones ``head_policy.py`` replays): per task, the pair-view
head's accuracy out of fold on the training part (L2 by ``choose_l2``), its accuracy on the held-out part, the
adapter's there, and both alone on test.

    python benchmarks/head_signal.py runs/pq/h160
"""
import sys
import numpy as np, glob
from pathlib import Path
from safetensors.numpy import load_file
from adaptive_learner.training.head.choice import cv_log_probs, choose_l2
from adaptive_learner.training.head.model import fit_head
for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    d = load_file(f)
    yf, yv, yt = d["fit_labels"], d["val_labels"], d["labels_test"]
    n = d["scores_test"].shape[1]
    xf = np.concatenate([d["fit_features"]] + [d[k] for k in sorted(d) if k.startswith("fit_view_pair")], 1)
    xv = np.concatenate([d["val_features"]] + [d[k] for k in sorted(d) if k.startswith("val_view_pair")], 1)
    xt = np.concatenate([d["features_test"]] + [d[k] for k in sorted(d) if k.startswith("test_view_pair")], 1)
    l2, _ = choose_l2(xf, yf.tolist(), n)
    oof = cv_log_probs(xf, yf.tolist(), n, l2).argmax(1) == yf
    h = fit_head(xf, yf.tolist(), n, 0, l2=l2)
    hv = h.log_probs(xv).argmax(1) == yv
    av = d["scores_val"].argmax(1) == yv
    at = (d["scores_test"].argmax(1) == yt).mean(); ht = (h.log_probs(xt).argmax(1) == yt).mean()
    print(f"{Path(f).stem:16s} fit {len(yf)} val {len(yv)} head-oof {oof.mean():.3f} head-val {hv.mean():.3f} adapter-val {av.mean():.3f} | test adapter {at:.3f} head {ht:.3f}")
