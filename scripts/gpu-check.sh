#!/usr/bin/env bash
# The GPU check in one bounded command, on a machine with a GPU and a copy of this repository:
#   bash scripts/gpu-check.sh [arguments of python -m benchmarks.gpu_check, e.g. --size large]
# (with this workplace's device tool: run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=450)).
# It installs nothing into the machine's Python: it uses the first interpreter whose torch sees a GPU (a CUDA
# build already there; scripts/setup.sh would pin the CPU build, so it is not run), imports this tree from src/,
# and puts the wheels of .whl/, if there are any, in front of that Python's own packages from a temporary folder
# (scripts/gpu-wheels.sh prepares them where pip reaches PyPI, for a machine that lacks a package or has an
# older transformers than the project pins, as this workplace's GPU image does).
# Time: the check keeps to GPU_CHECK_BUDGET_S (default 300 s); this script kills it at that plus
# GPU_CHECK_GRACE_S (default 90 s) whatever happens. Results go to $OUT when it is set, else
# runs/gpu-check/ (gpu-check.json, each stage's JSON, the log, a copy of BENCHMARKS.md); the sections go
# to BENCHMARKS.md. Exit status: the check's (0 all met, 1 a target missed, 2 bad arguments or a missing
# package, 3 a stage crashed, 4 a stage cut by the budget), or 124 when the hard limit killed it.
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${GPU_CHECK_BUDGET_S:-300}
grace=${GPU_CHECK_GRACE_S:-90}
results=${OUT:-runs/gpu-check}
mkdir -p "$results"
log="$results/gpu-check.log"
: >"$log"
say() { echo "gpu-check.sh: $*" | tee -a "$log" >&2; }

py=""
candidates="python3 python .venv/bin/python"
[ -n "${PYTHON:-}" ] && candidates=$PYTHON # an interpreter named by the caller is the one used
for candidate in $candidates; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  if "$candidate" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    py=$candidate
    break
  fi
  if [ -z "$py" ] && "$candidate" -c 'import torch' 2>/dev/null; then py=$candidate; fi
done
if [ -z "$py" ]; then
  say "no Python with torch found (tried \$PYTHON, python3, python, .venv/bin/python)"
  exit 2
fi
say "python: $(command -v "$py")"

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
  export PYTHONPATH="$site:$PYTHONPATH"
  for wheel in .whl/*.whl; do # one at a time: a wheel for another Python must not keep the others out
    if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheel" \
      >>"$log" 2>&1; then
      say "added ${wheel#.whl/}"
    else
      say "could not add ${wheel#.whl/} (see $log); the machine's own version, if any, is used"
    fi
  done
fi

# What the check needs, before any minute is spent: a missing package is named here, not after a stage starts.
if ! "$py" - >>"$log" 2>&1 <<'PY'
import importlib, sys
versions = {}
for name in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "safetensors", "pyarrow", "yaml", "peft"):
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as err:  # any import failure names the package
        versions[name] = f"MISSING ({type(err).__name__}: {err})"
import torch
print("packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
print(f"torch sees: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}, CUDA {torch.version.cuda}")
missing = [k for k, v in versions.items() if v.startswith("MISSING") and k != "peft"]
import promptability  # noqa: F401  (the tree's own package, from src/)
sys.exit(f"missing: {', '.join(missing)}: run scripts/gpu-wheels.sh where pip reaches PyPI and bring .whl/" if missing else 0)
PY
then
  tail -n 5 "$log" >&2
  say "the packages the check needs are not all there (see above)"
  exit 2
fi
tail -n 2 "$log" >&2
command -v nvidia-smi >/dev/null 2>&1 &&
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >>"$log" 2>&1

PYTHONUNBUFFERED=1 timeout -k 10 $((budget + grace)) "$py" -m benchmarks.gpu_check --budget-s "$budget" \
  --results "$results" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[ -f BENCHMARKS.md ] && [ "$results" != "." ] && cp BENCHMARKS.md "$results/BENCHMARKS.md"
[ "$status" = 124 ] && say "killed at the hard limit of $((budget + grace)) s; partial results are in $results"
say "exit status $status; results in $results"
exit "$status"
