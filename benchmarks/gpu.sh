#!/usr/bin/env bash
# Everything dafnet checks and times on a CUDA GPU, in one go:
#   bash benchmarks/gpu.sh [OUT_DIR]        (default: benchmarks/results)
# 1. the GPU tests (tests/test_gpu.py: Accelerate training in fp32 and bf16, GPU = CPU predictions,
#    TPS warp and distance correlation on the GPU);
# 2. the training-iteration benchmark at the quickstart and paper sizes, fp32 and bf16 eager, then
#    compiled (--compile reduce-overhead, train.compile: torch.compile with CUDA graphs) in fp32
#    and bf16 -> OUT_DIR/train_gpu.json and .md;
# 3. the TPS warp against kornia (CPU and GPU rows) -> OUT_DIR/tps_gpu.json;
# 4. distance correlation against the dcor package on the GPU -> OUT_DIR/dcor_gpu.json;
# 5. the training loader with the per-sample and the batched warp (data.augment.warp), the slices
#    on the GPU for the batched one -> OUT_DIR/data_gpu.json.
set -euo pipefail
out="${1:-benchmarks/results}"
mkdir -p "$out"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'benchmarks/gpu.sh: no CUDA device')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export PYTHONUNBUFFERED=1
python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider
python3 benchmarks/bench_train.py --device cuda --dtype fp32 --threads 1 --sizes quickstart paper \
    --quickstart-iterations 20 --paper-iterations 10 --repeats 3 --out "$out/train_gpu.json"
python3 benchmarks/bench_train.py --device cuda --dtype bf16 --threads 1 --sizes quickstart paper \
    --quickstart-iterations 20 --paper-iterations 10 --repeats 3 --append --out "$out/train_gpu.json"
for dtype in fp32 bf16; do
  python3 benchmarks/bench_train.py --device cuda --dtype "$dtype" --compile reduce-overhead --threads 1 \
      --sizes quickstart paper --quickstart-iterations 20 --paper-iterations 10 --repeats 3 --append \
      --out "$out/train_gpu.json"
done
python3 benchmarks/bench_tps.py --out "$out/tps_gpu.json"
python3 benchmarks/bench_dcor.py --device cuda --out "$out/dcor_gpu.json"
python3 benchmarks/bench_data.py --warp sample batch --device cuda --slices-on-device --out "$out/data_gpu.json"
