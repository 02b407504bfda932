#!/usr/bin/env bash
# Accept a CUDA GPU, correctness first, then speed (tools/gpu_check.py says what each check does):
#   1. every registered trainer's training steps and evaluation on a tiny CLIP, fp32 on CUDA against the CPU
#      (losses, gradients of the learned parameters, logits within 1e-4 relative);
#   2. each PREC (fp32, amp, fp16, bf16): finite losses, and within its stated tolerance of fp32;
#   3. one process through torchrun: an nccl process group, then train.py for one epoch;
#   4. the README's speed and memory tables (tools/benchmark.py on a random ViT-B/16-dims CLIP).
# Ends with one pass/fail table; exits 1 when a check fails, 2 without CUDA. The speed records go to
# $OUT_DIR/gpu_check.jsonl (default: gpu_check_output/).
#
#   tools/gpu_check.sh                 # on a GPU; uses .venv/bin/python when present, else python3
#   tools/gpu_check.sh --device cpu    # the same code on a CPU, skipping (and listing) what needs CUDA
#   PYTHON=python tools/gpu_check.sh   # another interpreter
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec "$PYTHON" tools/gpu_check.py "$@"
