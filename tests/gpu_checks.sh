#!/usr/bin/env bash
# The CUDA checks as one prepared run, for a machine with a GPU and a CUDA build of torch
# (docs/verification.md, "On a machine with a GPU"): the environment, every test marked
# `cuda`, then the CUDA benchmark (legacy, eager and compiled side by side), each under
# its own time limit so that one slow part cannot eat the other's time.
#
#   tests/gpu_checks.sh                 results under bench-out/gpu/
#   OUT=/some/dir tests/gpu_checks.sh   results there ($OUT: a device run's return folder)
#
# Results: env.txt, cuda-tests.log, bench.log, performance-cuda.json and performance.md
# (docs/performance.md with its CUDA block filled in: copy it over the docs page).
# Settings (environment): PYTHON (python3), ZEROKV_GPU_TEST_S (300), ZEROKV_GPU_BENCH_S
# (420), ZEROKV_GPU_BENCH_ARGS ("--config all --repeats 3 --steps 10"). Exit status: 3
# when torch sees no CUDA device (nothing runs), 0 when both parts passed, else the first
# failing part's status.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-bench-out/gpu}"
mkdir -p "$out"
export PYTHONPATH="impl:spec${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
test_s="${ZEROKV_GPU_TEST_S:-300}"
bench_s="${ZEROKV_GPU_BENCH_S:-420}"
read -r -a bench_args <<<"${ZEROKV_GPU_BENCH_ARGS:---config all --repeats 3 --steps 10}"

# The test files that hold `cuda` tests (tests/test_gpu_checks.py keeps this list whole):
# naming them keeps collection away from modules that need packages a GPU image lacks.
cuda_test_files=(tests/test_compiled.py tests/test_keys.py tests/test_sync_free.py)

if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)"; then
    echo "gpu_checks: torch sees no CUDA device here: nothing to check" | tee "$out/env.txt"
    exit 3
fi

"$py" - <<'EOF' 2>&1 | tee "$out/env.txt"
import platform

import torch

print("python", platform.python_version(), "| torch", torch.__version__,
      "| cuda", torch.version.cuda, "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF

timeout "$test_s" "$py" -m pytest -m cuda -p no:cacheprovider -rs "${cuda_test_files[@]}" \
    2>&1 | tee "$out/cuda-tests.log"
tests_rc=${PIPESTATUS[0]}

cp docs/performance.md "$out/performance.md"
timeout "$bench_s" "$py" -m zerokv.bench "${bench_args[@]}" --device cuda --no-progress \
    --json "$out/performance-cuda.json" --markdown "$out/performance.md" \
    2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu_checks: cuda tests exit ${tests_rc}, benchmark exit ${bench_rc} (results in ${out})"
if [ "$tests_rc" -ne 0 ]; then exit "$tests_rc"; fi
exit "$bench_rc"
