#!/usr/bin/env bash
# Run the benchmark on a CUDA GPU: GOPro, CoOp and CoCoOp on a random ViT-B/16-dims CLIP, in bf16 and fp16,
# 10 classes, batch 4, then GOPro's 1000-class evaluation of 8 images. Prints one JSON line per run; takes
# a few minutes (each phase builds its trainer in a fresh process). Exits 2 when CUDA is unavailable.
#
#   tools/gpu_check.sh                 # uses .venv/bin/python when present, else python3
#   PYTHON=python tools/gpu_check.sh   # another interpreter
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available to $PYTHON (torch.cuda.is_available() is False); run this on a GPU machine" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" >&2

run() {
    # Each run is capped, so a hung run cannot eat the whole check.
    timeout 240 "$PYTHON" tools/benchmark.py --device cuda --threads 4 --json "$@"
}

for precision in bf16 fp16; do
    run --precision "$precision" --trainer GOPro CoOp CoCoOp --classes 10 --batch-size 4 --steps 10 --warmup 3
done
run --precision bf16 --trainer GOPro --phases eval --eval-classes 1000 --steps 3 --warmup 1
