#!/usr/bin/env bash
# Everything a GPU lease checks, in one command of under 10 minutes on one CUDA GPU:
#   1. the machine (GPU, driver, torch) -> $OUT/env.txt
#   2. the README's main job on the GPU: `byol train --preset fashion-mnist` for $FM_MINUTES
#      minutes of wall-clock (schedule fitted to it), then `byol eval` (linear probe + k-NN, test split)
#      -> $OUT/fashion_mnist.log, $OUT/fashion_mnist_run.tar.gz (metrics.jsonl, eval.json, ...)
#   3. DistributedDataParallel through torchrun (one process, nccl, SyncBN), then
#      `--resume` of the same run folder -> $OUT/ddp.log
#   4. benchmarks/gpu.sh (the `byol bench` set) -> $OUT/gpu.tar.gz, its table in $OUT/gpu.log
#   5. the test suite with CUDA visible, for the time left -> $OUT/pytest.log
# Each phase gets what is left of $DEADLINE seconds; one that fails does not stop the others.
#
# Usage (the device tool; .fmnist holds the four Fashion-MNIST IDX files, .whl wheels the
# machine lacks, e.g. simplejpeg):
#   bash benchmarks/gpu_session.sh            with carry [".fmnist", ".whl"]
# Locally, a fast check of this script on the CPU: SMOKE=1 OUT=/tmp/gs bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=${DEADLINE:-560}  # the device tool allows 600 s a call: run it with timeout_s 590
FM_MINUTES=${FM_MINUTES:-1}
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
DEVICE=cuda
if [ "${SMOKE:-0}" = 1 ]; then DEVICE=cpu; PYTHON=${PYTHON_SMOKE:-.venv/bin/python}; fi

if ls .whl/*.whl > /dev/null 2>&1 && [ "${SMOKE:-0}" != 1 ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
BYOL=("$PYTHON" -m byol)

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
phase() { echo "== $1 at +$(( $(date +%s) - START )) s (left $(left) s)"; }
# bounded SECONDS CMD...: run CMD with at most SECONDS (and never past the deadline)
bounded() {
  local limit=$1; shift
  local rest; rest=$(left)
  (( rest < limit )) && limit=$rest
  if (( limit <= 5 )); then echo "skipped: no time left ($*)"; return 124; fi
  timeout --kill-after=5 "$limit" "$@"
}

{
  phase env
  date -u; nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv 2>&1; nproc; "$PYTHON" -c "import sys, torch, torchvision; print(sys.version);
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
      torch.cuda.is_available(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported());
print('torchvision', torchvision.__version__); import byol; print('byol', byol.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

RUN=/tmp/gs-fm
rm -rf "$RUN"
{
  phase "fashion-mnist train"
  if [ "${SMOKE:-0}" = 1 ]; then
    FM=(--data digits --arch convnet --image-size 8 --hidden-dim 64 --max-steps 3)
  else
    FM=(--preset fashion-mnist --data-root .fmnist --time-limit "$FM_MINUTES"
        --schedule-to-time-limit)
  fi
  bounded $(( FM_MINUTES * 60 + 60 )) "${BYOL[@]}" train "${FM[@]}" --device "$DEVICE" \
    --out "$RUN" 2>&1 | tail -n 25
  phase "fashion-mnist eval"
  bounded 120 "${BYOL[@]}" eval "$RUN" --device "$DEVICE" --protocol all \
    --baseline random-init 2>&1 | tail -n 30
  phase "fashion-mnist done"
} > "$OUT/fashion_mnist.log" 2>&1
cat "$OUT/fashion_mnist.log"
tar -czf "$OUT/fashion_mnist_run.tar.gz" -C /tmp --exclude='*.pt' --exclude='*.safetensors' \
  gs-fm 2> /dev/null

DDP=/tmp/gs-ddp
rm -rf "$DDP"
{
  phase "ddp train"
  DDP_ARGS=(--data digits --arch convnet --image-size 8 --hidden-dim 64 --batch-size 64
            --device "$DEVICE")
  # torchrun itself, not --nproc 1 (which trains in this process without DDP)
  TORCHRUN=("$PYTHON" -m torch.distributed.run --standalone --nproc-per-node=1 -m byol)
  bounded 90 "${TORCHRUN[@]}" train "${DDP_ARGS[@]}" --max-steps 20 --out "$DDP" 2>&1 |
    tail -n 40
  phase "ddp resume"
  bounded 60 "${TORCHRUN[@]}" train "${DDP_ARGS[@]}" --max-steps 40 --out "$DDP" --resume \
    2>&1 | tail -n 40
  ls -la "$DDP" "$DDP/checkpoints" 2>&1
  tail -n 3 "$DDP/metrics.jsonl" 2>&1
  phase "ddp done"
} > "$OUT/ddp.log" 2>&1
cat "$OUT/ddp.log"

{
  phase "gpu.sh"
  if [ "${SMOKE:-0}" = 1 ]; then
    SMOKE=1 PYTHON="$PYTHON" OUT_DIR=/tmp/gs-gpu TABLE=/tmp/gs-gpu.md bounded 200 bash benchmarks/gpu.sh
  else
    PYTHON="$PYTHON" OUT_DIR=/tmp/gs-gpu TABLE=/tmp/gs-gpu/gpu-results.md \
      EAGER_LIMIT=90 COMPILE_LIMIT=120 bounded 330 bash benchmarks/gpu.sh
  fi
  phase "gpu.sh done"
} > "$OUT/gpu.log" 2>&1
cat "$OUT/gpu.log"
tar -czf "$OUT/gpu.tar.gz" -C /tmp "$(basename "${GPU_DIR:-/tmp/gs-gpu}")" 2> /dev/null

{
  phase pytest
  if [ "${SMOKE:-0}" = 1 ]; then
    bounded 60 "$PYTHON" -m pytest -q -x tests/test_runtime.py 2>&1 | tail -n 20
  else
    bounded 400 "$PYTHON" -m pytest -q -n 12 -p no:cacheprovider --tb=short tests > "$OUT/pytest-full.log" 2>&1
    tail -n 60 "$OUT/pytest-full.log"
  fi
  phase end
} > "$OUT/pytest.log" 2>&1
cat "$OUT/pytest.log"
