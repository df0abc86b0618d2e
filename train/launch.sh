#!/usr/bin/env bash
# Thin launcher: ./train/launch.sh RECIPE.yaml [NPROC] [key=value ...]
# NPROC processes on this node under torchrun (gloo on CPU, nccl on GPU). Multi-node: see README.md.
set -euo pipefail
recipe=${1:?usage: train/launch.sh RECIPE.yaml [NPROC] [key=value ...]}; shift
nproc=${1:-1}; [[ $# -gt 0 ]] && shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m torch.distributed.run --nproc_per_node "$nproc" --master_port "${MASTER_PORT:-29500}" \
  -m anygpt.cli train --config "$recipe" "$@"
