#!/usr/bin/env bash
# Every GPU check in one call on a lent GPU machine: the CUDA benchmarks (results JSON), a
# profile of one full reading on the GPU, and the CUDA tests. First, here: benchmarks/gpu-wheels.sh
# Then call the device tool's run with
#   command: bash benchmarks/gpu-checks.sh    carry: [".whl"]    timeout_s: 480
# and copy $OUT/perf-gpu.json to benchmarks/results/ (the other files say what was seen).
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/esper-gpu}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
py=${PYTHON:-python3}
{ nvidia-smi -L; "$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available())'; } \
  2>&1 | tee "$out/machine.txt"
status=0
"$py" -m esper.bench.gpu --json "$out/perf-gpu.json" --profile "$out/sense-profile.txt" \
  2>&1 | tee "$out/bench.log" || status=1
"$py" -m pytest -q -p no:cacheprovider tests/workloads/test_cuda.py \
  2>&1 | tee "$out/tests.log" || status=1
exit $status
