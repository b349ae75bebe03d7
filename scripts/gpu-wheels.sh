#!/usr/bin/env bash
# Prepares .whl/ for scripts/gpu-check.sh on a GPU machine that cannot reach PyPI: the wheels (Python 3.12,
# x86-64 Linux) of what such a machine's image may lack or hold too old: transformers and datasets at the
# versions requirements-cpu.txt pins, and datasets' dill and multiprocess. Run it where pip reaches PyPI;
# more requirement specs as arguments (e.g. pyarrow==24.0.0 when that machine's pyarrow is older than
# datasets needs). .whl/ is git-ignored through .git/info/exclude; give it to the GPU machine with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pin() { grep -E "^$1==" requirements-cpu.txt; }
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin transformers)" "$(pin datasets)" "dill<0.4.2" "multiprocess<0.70.20" "$@"
ls -la .whl
