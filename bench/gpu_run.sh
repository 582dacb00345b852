#!/usr/bin/env bash
# Every GPU benchmark in one command on the lent GPU machine, inside a time budget.
#
#   bash bench/gpu_run.sh                 # on the GPU machine, repo root, with .whl/ carried (make gpu-wheels)
#   GPU_BENCH_SMOKE=1 bash bench/gpu_run.sh   # the same script on a CPU machine with toy models (a check)
#
# Installs the carried wheels (.whl/core, .whl/bnb) into a target folder, builds the random-weight
# Qwen2.5-VL-3B once, runs bench/gpu_{sft,grpo,generate,chexbert}.py, each under its own deadline and
# `timeout`, and writes under $OUT (default ./gpu-out): gpu_benchmarks.md (the Markdown sections),
# gpu_results.json (raw numbers), gpu_run.log (every benchmark's output) and env.txt (versions, GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
BUDGET=${GPU_BENCH_BUDGET_S:-520}
[[ -n "${GPU_BENCH_SMOKE:-}" ]] && BUDGET=${GPU_BENCH_BUDGET_S:-1500}
SMOKE=${GPU_BENCH_SMOKE:-}
PY=${PYTHON:-python3}
start=$(date +%s)
work=$(mktemp -d)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export MLLM_CXR_BENCH_MODEL=${MLLM_CXR_BENCH_MODEL:-$work/model}
log="$OUT/gpu_run.log"
: >"$log"

if [[ -z "$SMOKE" ]] && compgen -G ".whl/*/*.whl" >/dev/null; then
  site=${GPU_BENCH_SITE:-$work/site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*/*.whl \
    >>"$log" 2>&1 || { echo "installing the carried wheels failed (see $log)"; exit 1; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  "$PY" -c "import torch, transformers, trl, peft, accelerate; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

smoke_flag=${SMOKE:+--smoke}
# name:seconds -- each benchmark's share of the budget, in order of importance
plan="sft:200 grpo:130 generate:75 chexbert:50"
"$PY" -c "import sys; sys.path[:0] = ['bench']; import gpu_common as G; G.build_model(None, G.mode(bool('$SMOKE')))" \
  >>"$log" 2>&1 || echo "building the benchmark model failed (see gpu_run.log)"
echo "model built after $(( $(date +%s) - start )) s"
for item in $plan; do
  name=${item%%:*}; share=${item##*:}
  left=$(( start + BUDGET - $(date +%s) ))
  (( share > left )) && share=$left
  if (( share < 20 )); then echo "skipped gpu_$name: budget spent" | tee -a "$log"; continue; fi
  echo "== gpu_$name (up to ${share} s)" | tee -a "$log"
  t0=$(date +%s)
  MLLM_CXR_BENCH_DEADLINE=$(( $(date +%s) + share - 15 )) timeout -k 5 "$share" \
    "$PY" "bench/gpu_$name.py" $smoke_flag --json "$work/$name.json" --md "$work/$name.md" >>"$log" 2>&1
  rc=$?
  echo "   rc=$rc in $(( $(date +%s) - t0 )) s" | tee -a "$log"
  if [[ -s "$work/$name.md" ]]; then cat "$work/$name.md" >>"$OUT/gpu_benchmarks.md"; echo >>"$OUT/gpu_benchmarks.md"
  else printf '## gpu_%s: no result (rc=%s; see gpu_run.log)\n\n' "$name" "$rc" >>"$OUT/gpu_benchmarks.md"; fi
done
"$PY" - "$work" "$OUT/gpu_results.json" <<'PYEOF'
import json, pathlib, sys
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.write_text(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}, indent=1))
PYEOF
echo "done in $(( $(date +%s) - start )) s; results in $OUT"
rm -rf "$work"
