#!/usr/bin/env bash
# Issue 15's GPU measurements in one command, for one short lease of the GPU machine (H200,
# 16 cores, its own python3 with torch but without hydra-core, omegaconf or albumentations, and
# no package index). Prepare here first: `bash benchmarks/fetch_wheels.sh` (fills the git-ignored
# benchmarks/wheels/ with those wheels and a copy of the re-created released design); then run,
# through the device tool, from the repository root with carry ["benchmarks/wheels"]:
#
#   bash benchmarks/gpu.sh                 # writes $OUT/gpu_suite.json, batchnorm.json, gpu_log.txt
#   bash benchmarks/gpu.sh --compile --gpu-decode --more-workers 12    # also the candidates
#   SMOKE=1 OUT=/tmp/gpu_dry bash benchmarks/gpu.sh                     # CPU dry run, tiny sizes
#
# Wheels go to a private --target folder put first on PYTHONPATH, so what the machine already has
# is left alone; a wheel that does not fit its python is skipped if the package is there anyway.
# The suite skips what no longer fits its time budget (450 s from the start of this script).
set -uo pipefail
export SUITE_START=${SUITE_START:-$(date +%s.%N)}
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
PYTHON=${PYTHON:-python3}
WHEELS=benchmarks/wheels
SITE=${SITE:-/tmp/abaw_site}
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime albumentations albucore pydantic
  pydantic-core annotated-types typing-inspection typing-extensions stringzilla simsimd)
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_log.txt") 2>&1
LOG=$!
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled

echo "== $(date -u +%FT%TZ) $(uname -m), $(getconf _NPROCESSORS_ONLN) cores, $("$PYTHON" --version 2>&1)"
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm --format=csv

install() {
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$SITE" --find-links "$WHEELS" "$@"
}
if [ -d "$WHEELS" ]; then
  rm -rf "$SITE"
  if ! install "${PACKAGES[@]}"; then
    for package in "${PACKAGES[@]}"; do
      install "$package" || echo "note: no usable wheel of $package here; the installed one is used"
    done
  fi
  export PYTHONPATH="$SITE:$PWD"
else
  echo "note: no $WHEELS (run benchmarks/fetch_wheels.sh): the installed packages are used"
  export PYTHONPATH="$PWD"
fi
"$PYTHON" - <<'PY' || exit 1
import albumentations, hydra, omegaconf, pydantic, pytorch_lightning, torch
print("== torch", torch.__version__, "cuda", torch.cuda.is_available(), "| lightning",
      pytorch_lightning.__version__, "| albumentations", albumentations.__version__,
      "| hydra", hydra.__version__, "| omegaconf", omegaconf.__version__)
PY

REFERENCE=${REFERENCE:-$WHEELS/reference_design.py}
[ -f "$REFERENCE" ] || REFERENCE=../shared/benchmarks/reference_design.py
ARGS=(--out "$OUT/gpu_suite.json" --reference "$REFERENCE")
[ -n "${SMOKE:-}" ] && ARGS+=(--smoke)
echo "== $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $SUITE_START}") s: suite starts"
"$PYTHON" benchmarks/gpu_suite.py "${ARGS[@]}" "$@"
status=$?
echo "== $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $SUITE_START}") s: exit $status"
exec >&- 2>&-
wait "$LOG"  # the log is complete before the results are collected
exit $status
