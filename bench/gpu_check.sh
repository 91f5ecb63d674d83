#!/usr/bin/env bash
# GPU check (<= 8 minutes on one GPU): feature extraction img/s vs a bare forward, full fine-tune
# triplets/s vs a bare step (bf16 autocast, channels-last), and a 2-process torchrun fine-tune equal to a
# 1-process one. Runs offline on generated images.
#
#   bash bench/gpu_check.sh            # on the accelerator machine (CUDA)
#   bash bench/gpu_check.sh --smoke    # anywhere, on the CPU, tiny sizes: checks the script itself
#
# With one GPU, the two torchrun processes share it over gloo (ALIGNLAB_DIST_BACKEND=gloo: nccl refuses two
# ranks on one device); with two or more GPUs they use nccl, one GPU each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ "${1:-}" == "--smoke" ]]; then
  COMMON=(--device cpu --random --backbone timm:mobilenetv3_small_050 --workers 1)
  FEATURES=(--images 16 --batch 8)
  FINETUNE=(--size 64 --batch 4 --images 24 --steps 3)
  DDP=(--size 48 --batch 4 --images 24 --steps 3)
  export CUDA_VISIBLE_DEVICES=""
  LIMIT=300
else
  COMMON=(--random)  # random init: the speed does not depend on the weights, and no download is needed
  FEATURES=(--images 4096 --batch 128)
  FINETUNE=(--size 224 --batch 64 --images 1024 --steps 24)
  DDP=(--size 160 --batch 16 --images 256 --steps 6)
  LIMIT=150
fi

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [[ "$GPUS" -lt 2 ]]; then export ALIGNLAB_DIST_BACKEND=gloo; fi
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|',
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| gpus', torch.cuda.device_count())"
printf '%-34s%12s%12s  %-10s%8s\n' check ours bare unit ratio

timeout "$LIMIT" "$PY" -m bench.gpu_check features "${COMMON[@]}" "${FEATURES[@]}" | grep -v '^{'
timeout "$LIMIT" "$PY" -m bench.gpu_check finetune "${COMMON[@]}" "${FINETUNE[@]}" | grep -v '^{'

timeout "$LIMIT" "$PY" -m bench.gpu_check prepare-ddp "$WORK/ddp" "${COMMON[@]}" "${DDP[@]}" >/dev/null
ARGS=(--config "$WORK/ddp/config.json" --labels "$WORK/ddp/labels.npz" --pool "$WORK/ddp/images" --quiet)
timeout "$LIMIT" "$PY" -m alignment.finetune "${ARGS[@]}" --out "$WORK/ddp/single"
OMP_NUM_THREADS=1 timeout "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
  -m alignment.finetune "${ARGS[@]}" --out "$WORK/ddp/ddp"
timeout "$LIMIT" "$PY" -m bench.gpu_check compare-ddp "$WORK/ddp" "${COMMON[@]}" | grep -v '^{'
