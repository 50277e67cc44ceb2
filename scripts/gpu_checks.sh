#!/usr/bin/env bash
# The GPU checks of --compile and --cuda-graphs, in one command on a machine with a CUDA device:
#
#     bash scripts/gpu_checks.sh [OUT_DIR]        # default OUT_DIR: gpu-checks
#
# 1. tests/test_cuda_graphs.py and tests/test_compile.py (the capture tests skip without CUDA;
#    here they run: replayed updates and bounds against eager ones from the same noise, new noise
#    per replay, skipped non-finite updates, a trained and resumed run);
# 2. benchmarks/bench_svi.py with every contender (eager, compiled, graph-replayed library step,
#    plain PyTorch eager and graph-captured) per model, for the small and large configs and the
#    TIMIT recipe's full-size update. Results: OUT_DIR/tests.log and OUT_DIR/bench_svi.jsonl.
set -euo pipefail
out="${1:-gpu-checks}"
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_checks.sh: no CUDA device here')"
python -m pytest -q -rs tests/test_cuda_graphs.py tests/test_compile.py 2>&1 | tee "$out/tests.log"
python benchmarks/bench_svi.py --device cuda --compile --cuda-graphs --config small --config large --config timit \
    --model zforcing --model vrnn --model srnn --model dmm --model storn --model rnn --repeats 30 | tee "$out/bench_svi.jsonl"
