#!/usr/bin/env bash
# One `accelerate launch` per node for the recipes (sft.py, dpo.py, grpo.py), torchrun-style: every node runs
# this script with the same NNODES/MASTER_ADDR/MASTER_PORT and its own NODE_RANK; accelerate (torchrun, static
# rendezvous) does the rest. Nothing in the accelerate config needs editing: the per-run values are flags.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/multinode_launch.sh recipes/sft.py --config recipes/configs/qwen2.5-vl-7b/sft.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 scripts/multinode_launch.sh recipes/sft.py --config recipes/configs/qwen2.5-vl-7b/sft.yaml
#
# or, from any one machine, over ssh (host order = node rank; the repository at the same path on each host):
#   HOSTS="gpu01 gpu02" scripts/multinode_launch.sh recipes/sft.py --config ...
# GRPO with a rollout server on a host of its own (started over ssh from the same --config, see
# `python -m mllm_cxr.train.vllm_server`; the trainers wait for its /health, then get its address):
#   HOSTS="gpu01 gpu02" VLLM_HOST=gpu03 VLLM_TP=4 scripts/multinode_launch.sh recipes/grpo.py --config CONFIG.yaml
#
# Environment (defaults in brackets):
#   NNODES [1]  NODE_RANK [0]  MASTER_ADDR [127.0.0.1]  MASTER_PORT [29500]
#   GPUS_PER_NODE [number of GPUs nvidia-smi lists, else 1]   processes per node; --num_processes = NNODES x this
#   ACCELERATE_CONFIG [recipes/accelerate/multinode_zero2.yaml]  (multinode_{ddp,zero2,zero3,zero3_offload,fsdp2})
#   VLLM_SERVER_HOST, VLLM_SERVER_PORT [8000]   GRPO server mode: the `trl vllm-serve` node the trainers use
#   ACCELERATE [accelerate]   the launcher executable (e.g. a venv's bin/accelerate)
#   VLLM_HOST (ssh mode)  host for `trl vllm-serve`; VLLM_TP [1], VLLM_DP [1], VLLM_PORT [8000],
#               VLLM_GPU_MEMORY_UTILIZATION [0.9], VLLM_START_TIMEOUT [1200 s]
#   DRY_RUN=1   print the command instead of running it
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: [NNODES=.. NODE_RANK=.. MASTER_ADDR=..] $0 RECIPE.py --config CONFIG.yaml [--flag value ...]" >&2; exit 2; }

if [ -n "${HOSTS:-}" ]; then  # fan out: this script once per host over ssh, rank = position in HOSTS
    read -r -a hosts <<< "$HOSTS"
    master="${MASTER_ADDR:-${hosts[0]}}"
    pids=()
    if [ -n "${VLLM_HOST:-}" ]; then  # GRPO server mode: the rollout server first, on its own host
        config=""
        args=("$@")
        for i in "${!args[@]}"; do [ "${args[$i]}" = "--config" ] && config="${args[$((i + 1))]}"; done
        [ -n "$config" ] || { echo "VLLM_HOST needs the recipe's --config (the server is configured from it)" >&2; exit 2; }
        mapfile -t serve < <(cd "$repo" && python -m mllm_cxr.train.vllm_server "$config" --lines --tp "${VLLM_TP:-1}" \
            --dp "${VLLM_DP:-1}" --port "${VLLM_PORT:-8000}" --gpu-memory-utilization "${VLLM_GPU_MEMORY_UTILIZATION:-0.9}")
        [ "${#serve[@]}" -gt 2 ] || { echo "no trl vllm-serve command for $config" >&2; exit 2; }
        if [ -n "${DRY_RUN:-}" ]; then
            echo "server $VLLM_HOST: $(printf '%q ' "${serve[@]}")" >&2
        else
            ssh -o BatchMode=yes "$VLLM_HOST" "cd $(printf %q "$repo") && exec$(printf ' %q' "${serve[@]}")" &
            server_pid=$!
            trap 'kill "$server_pid" 2>/dev/null || true' EXIT
            deadline=$(( $(date +%s) + ${VLLM_START_TIMEOUT:-1200} ))
            until curl -sf "http://$VLLM_HOST:${VLLM_PORT:-8000}/health" > /dev/null; do
                kill -0 "$server_pid" 2>/dev/null || { echo "trl vllm-serve on $VLLM_HOST exited" >&2; exit 1; }
                [ "$(date +%s)" -lt "$deadline" ] || { echo "trl vllm-serve on $VLLM_HOST not healthy" >&2; exit 1; }
                sleep 10
            done
        fi
        VLLM_SERVER_HOST="$VLLM_HOST" VLLM_SERVER_PORT="${VLLM_PORT:-8000}"
    fi
    for i in "${!hosts[@]}"; do
        remote="cd $(printf %q "$repo") && HOSTS= VLLM_HOST= NNODES=${#hosts[@]} NODE_RANK=$i MASTER_ADDR=$master"
        for v in MASTER_PORT GPUS_PER_NODE ACCELERATE_CONFIG VLLM_SERVER_HOST VLLM_SERVER_PORT ACCELERATE DRY_RUN; do
            [ -n "${!v:-}" ] && remote+=" $v=$(printf %q "${!v}")"
        done
        remote+=" scripts/multinode_launch.sh$(printf ' %q' "$@")"
        ssh -o BatchMode=yes "${hosts[$i]}" "$remote" &
        pids+=($!)
    done
    rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    exit $rc
fi

nnodes="${NNODES:-1}"
rank="${NODE_RANK:-0}"
if [ -z "${GPUS_PER_NODE:-}" ]; then
    GPUS_PER_NODE=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    [ "$GPUS_PER_NODE" -ge 1 ] 2>/dev/null || GPUS_PER_NODE=1
fi
config="${ACCELERATE_CONFIG:-$repo/recipes/accelerate/multinode_zero2.yaml}"
recipe="$1"; shift
extra=()
if [ -n "${VLLM_SERVER_HOST:-}" ]; then
    extra=(--use_vllm true --vllm_mode server --vllm_server_host "$VLLM_SERVER_HOST" --vllm_server_port "${VLLM_SERVER_PORT:-8000}")
fi
cmd=("${ACCELERATE:-accelerate}" launch --config_file "$config"
     --num_machines "$nnodes" --num_processes "$((nnodes * GPUS_PER_NODE))" --machine_rank "$rank"
     --main_process_ip "${MASTER_ADDR:-127.0.0.1}" --main_process_port "${MASTER_PORT:-29500}"
     "$recipe" "$@" ${extra[@]+"${extra[@]}"})
echo "node $rank/$nnodes: $(printf '%q ' "${cmd[@]}")" >&2
[ -n "${DRY_RUN:-}" ] && exit 0
exec "${cmd[@]}"
