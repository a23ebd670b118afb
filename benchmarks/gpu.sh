#!/usr/bin/env bash
# The GPU set of `byol bench`, in under 8 minutes on one CUDA GPU:
#   ResNet-18 small-image stem, 32 px, batch 512, compile off and on
#   ResNet-50, 224 px, batch 256, compile off and on
# at --precision auto, as byol train runs (bf16 on GPUs that have it, fp32 on the others).
# Writes the raw JSON and logs of each run to $OUT_DIR (default benchmarks/gpu/) and the table
# to $TABLE (default benchmarks/gpu-results.md). A run that fails or overruns its time limit
# gets a row saying so; the others still run.
#
# Usage: bash benchmarks/gpu.sh        (PYTHON=... to choose the interpreter, default .venv)
#        SMOKE=1 bash benchmarks/gpu.sh   (a fast check of this script on the CPU, tiny configs)
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-benchmarks/gpu}
TABLE=${TABLE:-benchmarks/gpu-results.md}
EAGER_LIMIT=${EAGER_LIMIT:-90}      # seconds per eager run (ResNet-50 on an H200 took over 40 s)
COMPILE_LIMIT=${COMPILE_LIMIT:-150}  # seconds per compiled run (ResNet-18: 44 s of compilation)

DEVICE=cuda
PRECISION=${PRECISION:-auto}
R18=(--arch resnet18 --small-images --image-size 32 --batch-size 512 --steps 25 --windows 3 --warmup 5)
R50=(--arch resnet50 --no-small-images --image-size 224 --batch-size 256 --steps 12 --windows 3 --warmup 4)
if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu
  PRECISION=fp32
  R18=(--arch convnet --image-size 16 --batch-size 8 --hidden-dim 64 --steps 1 --windows 1 --warmup 1)
  R50=("${R18[@]}")
  OUT_DIR=${OUT_DIR%/}-smoke
  TABLE=${TABLE%.md}-smoke.md
elif ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA device visible to $PYTHON; nothing measured" >&2
  exit 1
fi
mkdir -p "$OUT_DIR"
START=$(date +%s)

# run NAME LIMIT ARGS...: one `byol bench` run, JSON to $OUT_DIR/NAME.json.
run() {
  local name=$1 limit=$2
  shift 2
  echo "gpu.sh: $name ($*)" >&2
  local command=("$PYTHON" -m byol bench --device "$DEVICE" --precision "$PRECISION" --json "$@")
  printf '%q ' "${command[@]}" > "$OUT_DIR/$name.cmd"
  if ! timeout --kill-after=10 "$limit" "${command[@]}" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.log"; then
    echo "gpu.sh: $name failed or ran past ${limit} s (see $OUT_DIR/$name.log)" >&2
    rm -f "$OUT_DIR/$name.json"
  fi
}

# The ceiling (matmul/conv rates) is measured once per backbone, in the eager run.
run resnet18-eager "$EAGER_LIMIT" "${R18[@]}" --no-compile
run resnet18-compile "$COMPILE_LIMIT" "${R18[@]}" --compile --no-ceiling
run resnet50-eager "$EAGER_LIMIT" "${R50[@]}" --no-compile
run resnet50-compile "$COMPILE_LIMIT" "${R50[@]}" --compile --no-ceiling

"$PYTHON" - "$OUT_DIR" "$TABLE" "$(( $(date +%s) - START ))" <<'PY'
import datetime
import json
import sys
from pathlib import Path

out_dir, table, seconds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
names = ["resnet18-eager", "resnet18-compile", "resnet50-eager", "resnet50-compile"]
results = {}
for name in names:
    path = out_dir / f"{name}.json"
    if path.exists() and path.stat().st_size:
        results[name] = json.loads(path.read_text())
machine = next((r["machine"] for r in results.values()), {})
lines = [
    "# GPU benchmark (`benchmarks/gpu.sh`)",
    "",
    f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {machine.get('gpu', '?')}, "
    f"torch {machine.get('torch', '?')}, CUDA {machine.get('cuda', '?')}, "
    f"whole set {seconds} s. Precision "
    f"{next((r.get('precision') for r in results.values()), '?')} (--precision auto), "
    "channels_last, in-memory uint8 data, "
    "augmentation on the GPU.",
    "",
    "| run | images/s | step ms | warm-up s | GFLOP / image | achieved TFLOP/s "
    "| ceiling TFLOP/s | of ceiling | × FLOP floor |",
    "|---|---|---|---|---|---|---|---|---|",
]
for name in names:
    result = results.get(name)
    if result is None:
        lines.append(f"| {name} | failed or over its time limit (see {out_dir}/{name}.log) "
                     "| | | | | | | |")
        continue
    # Compiled runs skip the ceiling measurement: use their eager twin's.
    twin = results.get(name.replace("-compile", "-eager"), {})
    ceiling = result.get("ceiling_gflops") or twin.get("ceiling_gflops")
    flops = result["flops_per_image"]
    achieved = result["achieved_gflops"]
    fraction = achieved / ceiling if ceiling and achieved else None
    lines.append(
        f"| {name} | {result['images_per_s']:.0f} | {result['step_ms']:.1f} "
        f"| {result['warmup_s']:.1f} | {flops / 1e9:.2f} | {achieved / 1e3:.1f} "
        f"| {ceiling / 1e3 if ceiling else float('nan'):.1f} "
        f"| {100 * fraction if fraction else float('nan'):.0f}% "
        f"| {1 / fraction if fraction else float('nan'):.2f} |"
    )
lines += ["", "Per-stage medians (ms, instrumented pass):", "",
          "| run | data | augment | forward | backward | optimizer | ema |", "|---|---|---|---|---|---|---|"]
for name, result in results.items():
    stages = result.get("stages_ms") or {}
    lines.append(f"| {name} | " + " | ".join(f"{stages.get(s, float('nan')):.1f}" for s in
                 ("data", "augment", "forward", "backward", "optimizer", "ema")) + " |")
lines += ["", "Ceiling: the best of a large matmul (8192², fp32 and the run's precision) and a large 3×3 convolution "
          "(256×256 channels, 56×56, batch 256), both memory formats. × FLOP floor = "
          "achieved time / (FLOPs ÷ ceiling); the target for ResNet-50 224 px is ≤ 2.", "",
          "Commands:", ""]
for name in names:
    command_file = out_dir / f"{name}.cmd"
    if command_file.exists():
        lines.append(f"- `{command_file.read_text().strip()}`")
table.write_text("\n".join(lines) + "\n")
print(table.read_text())
PY
echo "gpu.sh: wrote $TABLE in $(( $(date +%s) - START )) s" >&2
