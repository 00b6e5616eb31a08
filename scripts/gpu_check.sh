#!/usr/bin/env bash
# The GPU numbers of docs/performance.md in one go, on a machine with one CUDA GPU:
# the CUDA tests, the speed ratios against hand-written PyTorch, and the
# fashion-speedrun ladder and seeds. Each step is time-boxed, so that one that
# hangs or fails leaves the others their time.
#
#     scripts/gpu_check.sh [LOG_DIR]      # logs and JSON into LOG_DIR (gpu-check/)
#
# Needs the real Fashion-MNIST where cnnzoo finds it ($CNNZOO_DATA, or Debian's
# /usr/share/datasets/fashion-mnist); FASHION names the folder of its .gz files.
set -u
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
fashion=${FASHION:-/usr/share/datasets/fashion-mnist}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'bf16', torch.cuda.is_bf16_supported())" | tee -a "$out/gpu.txt"

echo "== tests/test_cuda.py"
timeout 240 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/tests.txt" \
    | tail -30

echo "== scripts/bench.py --device cuda --quick"
timeout 180 $py scripts/bench.py --device cuda --quick --fashion "$fashion" \
    --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"

echo "== scripts/speedrun.py --device cuda"
timeout 300 $py scripts/speedrun.py --device cuda --ladder 4 6 8 10 12 16 20 --seeds 0 1 2 \
    --seeds-at 0.94 --json "$out/speedrun.json" 2>&1 | tee "$out/speedrun.txt"

echo "== the same with torch.compile, seed 0"
timeout 120 $py scripts/speedrun.py --device cuda --no-ladder --seeds 0 \
    --set train.compile=true 2>&1 | tee "$out/compile.txt"
