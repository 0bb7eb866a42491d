#!/usr/bin/env bash
# The figures BENCHMARKS.md still lacks from a GPU, in order of what they settle, on a machine with a CUDA GPU,
# this package importable and the model cache filled (copy ~/.cache/adaptive-learner/wheels over; no network
# needed). Each step writes under OUT and stops at its own time limit, so a short lease still brings back the
# first ones.
#
#   bash benchmarks/gpu_checks.sh LIBRARY OUT        # LIBRARY: one sst2 adapter, e.g.
#   alearn learn --library LIBRARY --task sst2 --steps 30 --no-head        (made on any machine)
set -u
LIB=${1:?library with an sst2 adapter}; OUT=${2:?output folder}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/machine.txt" 2>&1
"$PY" -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__,
'peft', peft.__version__, 'cuda', torch.cuda.is_available())" >> "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# 1. issue 12: dynamic batching in process and with the model in its own process (--model-process) against one
#    request at a time, 1/8/32 clients, the scoring batch by device (32)
timeout 420 "$PY" "$HERE/serve_load.py" --library "$LIB" --task sst2 --mode mixed --seconds 20 --device cuda \
    --servers batching,model-process,one-at-a-time --out "$OUT/serve_load_gpu.json" 2>&1 | grep -v Warning \
    | tee "$OUT/serve_load_gpu.log"
# 2. the same at 32 clients with the CPU's scoring batch (8): what the GPU default is worth
timeout 150 "$PY" "$HERE/serve_load.py" --library "$LIB" --task sst2 --mode mixed --seconds 20 --device cuda \
    --clients 32 --score-batch 8 --out "$OUT/serve_load_gpu_b8.json" 2>&1 | grep -v Warning | tee "$OUT/serve_load_gpu_b8.log"
# 2b. the batching server at 32 clients with a shorter interpreter switch interval (the event loop reads requests
#     sooner while the model thread runs Python): batching server only, against step 1's batching row
timeout 100 "$PY" "$HERE/serve_load.py" --library "$LIB" --task sst2 --mode mixed --seconds 20 --device cuda \
    --clients 32 --servers batching --switch-ms 0.5 --out "$OUT/serve_load_gpu_sw05.json" 2>&1 | grep -v Warning \
    | tee "$OUT/serve_load_gpu_sw05.log"
# 2c. where the model thread's time goes now (Learner.predict alone, no HTTP)
timeout 120 "$PY" "$HERE/profile_predict.py" --library "$LIB" --task sst2 --device cuda --repeats 10 \
    --out "$OUT/profile_gpu.json" 2>&1 | grep -v Warning | head -60 > "$OUT/profile_gpu.log"
# 3. issue 11: the osf row of the headline table (seed 0), the one strategy too slow for the CPU
timeout "${OSF_SECONDS:-1800}" "$PY" -m adaptive_learner.cli bench headline --strategies osf --seeds 0 --max-train 160 \
    --max-test 200 --device cuda --out "$OUT/bench-headline-osf" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" \
    | tail -40 > "$OUT/osf.log"
