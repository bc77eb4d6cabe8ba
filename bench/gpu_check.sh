#!/usr/bin/env bash
# GPU checks in one go, on a CUDA machine with the locked environment and `pip install -e '.[vllm]'`:
# the CUDA-only tests (Triton masked AdamW against the torch path, frozen entries bitwise, exact
# top-k on the GPU, the vLLM engine against the HF one; a missing vLLM fails instead of skipping),
# then the benchmark lines (masked AdamW on CUDA, vLLM vs HF, in-place vs restarted search trial).
#   bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
DELTALAB_REQUIRE_VLLM=1 python -m pytest -q -n 0 -m cuda -p no:cacheprovider
python bench/masked_adamw.py --size 0.25B
python bench/engines.py --questions 1319 --trials 5
