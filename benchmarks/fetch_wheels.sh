#!/usr/bin/env bash
# Fills benchmarks/wheels/ (git-ignored, carried with the GPU run) with what the GPU machine lacks
# for benchmarks/gpu.sh, and copies the re-created released design beside them (it lives outside
# the repository and is never committed). Run here, where pip reaches the index:
#
#   bash benchmarks/fetch_wheels.sh            # then: du -sh benchmarks/wheels (< 30 MB)
#
# The GPU machine (KINDS.md) has torch, pytorch-lightning, torchmetrics, OpenCV, numpy, scipy,
# pandas, pyarrow, PyYAML, packaging and rich, but not hydra-core, omegaconf, albumentations or
# their needs below. Versions are the development venv's (the project's pins); --no-deps on
# purpose: every needed distribution is named. Compiled ones come for several CPython versions,
# gpu.sh installs those that match the machine's python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/work/main/.venv/bin/python}
WHEELS=benchmarks/wheels
REFERENCE=${REFERENCE:-/work/shared/benchmarks/reference_design.py}
PYTHONS=${PYTHONS:-"3.11 3.12 3.13"}

PURE=(
  hydra-core==1.3.8
  omegaconf==2.3.1
  albumentations==2.0.8
  albucore==0.0.24
  pydantic==2.14.4
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0  # pydantic 2.14 needs >= 4.16; the machine's may be older
)
COMPILED=(
  pydantic-core==2.50.5
  stringzilla==5.3.2
  simsimd==6.5.16
)

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "${PURE[@]}"
# antlr4-python3-runtime 4.9.3 (hydra's and omegaconf's parser) exists only as an sdist: build
# its pure-python wheel here, since the GPU machine has no index to build it with.
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3
for version in $PYTHONS; do
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
    --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "${COMPILED[@]}"
done
if [ -f "$REFERENCE" ]; then
  cp "$REFERENCE" "$WHEELS/reference_design.py"
else
  echo "warning: $REFERENCE not found: gpu.sh will skip the released design" >&2
fi
ls -1 "$WHEELS"
du -sh "$WHEELS"
