#!/usr/bin/env bash
# The native-student speed table on a GPU (issue 10), for a lent GPU machine; about 5 minutes.
# Needs runs/reline-quick from `make demo` (carry it to the device). Records GPU, driver and precision.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu_info.csv" || true
python -c "import openmm; p = openmm.Platform.getPlatformByName('CUDA'); print('CUDA platform, default precision', p.getPropertyDefaultValue('Precision'))" | tee -a "$OUT/gpu_info.csv"
timeout 420 python -m benchmarks.native_speed --preset gpu --platform CUDA --skip timestep --out "$OUT"
