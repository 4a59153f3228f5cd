#!/usr/bin/env bash
# The GPU checks of the ML core and the inference stage, run on a lent CUDA machine (one call).
#   OUT=/some/dir bash bench/gpu_check.sh [small]
# 1. bench/inference.py on CUDA (and on the same machine's CPU, 2 threads, as the in-run baseline);
# 2. the shipped baseline evaluated on CUDA (bf16 autocast) -- must match the CPU figures closely;
# 3. the baseline recipe (python -m ml.train defaults) trained from scratch on CUDA, timed, and evaluated.
# "small" shrinks everything to a smoke test (for checking the script on a CPU machine).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
PY=${PY:-python3}
if [ "${1:-}" = small ]; then
  TRAIN="--n-small 4 --n-full 0 --det-steps 3 --seg-steps 3"; EVAL="--phantoms 1 --preset small"; INF_DEV=cpu
else
  TRAIN=""; EVAL="--phantoms 16"; INF_DEV=cuda
fi
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ "$INF_DEV" = cuda ]; then
  echo "== inference on CUDA"; $PY bench/inference.py --threads 16 2>&1 | tee "$OUT/inference_cuda.txt"
  echo "== inference on CUDA with TTA"; $PY bench/inference.py --threads 16 --tta 2>&1 | tee "$OUT/inference_cuda_tta.txt"
  echo "== inference on this machine's CPU, 2 threads"; CUDA_VISIBLE_DEVICES= $PY bench/inference.py --threads 2 2>&1 | tee "$OUT/inference_cpu2.txt"
  echo "== shipped baseline evaluated on CUDA"
  $PY -m ml.evaluate ml/weights/baseline-v1.pt $EVAL --seed 90000 --threads 16 --out "$OUT/eval_shipped" 2>&1 | tee "$OUT/eval_shipped_cuda.txt"
fi
echo "== baseline recipe trained on ${INF_DEV}  (t=$(( $(date +%s) - start )) s)"
t0=$(date +%s)
$PY -m ml.train $TRAIN --out "$OUT/trained.pt" --cache /tmp/ml-cache --workers 14 --threads 8 --device $INF_DEV 2>&1 | tail -n 12 | tee "$OUT/train.txt"
echo "training wall time: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/train.txt"
$PY -m ml.evaluate "$OUT/trained.pt" $EVAL --seed 90000 --threads 16 --out "$OUT/eval_trained" 2>&1 | tee "$OUT/eval_trained.txt"
echo "total $(( $(date +%s) - start )) s"
