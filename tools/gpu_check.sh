#!/usr/bin/env bash
# The README's performance tables on a CUDA GPU: GOPro, CoOp and CoCoOp on a random ViT-B/16-dims CLIP, batch 4,
# fp32 and PREC auto (bf16), 10 classes (step, necessary work, eval per image, peak memory, end-to-end epoch
# ratio), then GOPro's and CoCoOp's 1000-class training step with a 12 GB budget and without one. Writes the
# JSON lines to $OUT_DIR/gpu_check.jsonl (default: gpu_check_output/) and prints one Markdown table per
# precision. Each run is capped; the whole check takes a few minutes on an H200. Exits 2 without CUDA.
#
#   tools/gpu_check.sh                 # uses .venv/bin/python when present, else python3
#   PYTHON=python tools/gpu_check.sh   # another interpreter
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
OUT_DIR="${OUT_DIR:-gpu_check_output}"
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gpu_check.jsonl"
: > "$RESULTS"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available to $PYTHON (torch.cuda.is_available() is False); run this on a GPU machine" >&2
    exit 2
fi
"$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" >&2

run() {
    # Each run is capped, so a hung run cannot eat the whole check; a failed run is reported and skipped.
    timeout 150 "$PYTHON" tools/benchmark.py --device cuda --threads 4 --batch-size 4 --json "$@" >> "$RESULTS" \
        || echo "gpu_check: run failed or timed out: $*" >&2
}

for precision in fp32 auto; do
    run --precision "$precision" --trainer GOPro CoOp CoCoOp --classes 10 --steps 5 --warmup 2 --end-to-end
done
for trainer in GOPro CoCoOp; do
    for budget in 12 ""; do
        run --precision auto --trainer "$trainer" --classes 1000 --phases train --steps 2 --warmup 1 \
            ${budget:+--memory-budget-gb "$budget"}
    done
done
"$PYTHON" tools/benchmark.py --table "$RESULTS"
