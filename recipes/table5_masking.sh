#!/usr/bin/env bash
# Paper Table 5: the masking policies, each pre-trained with the same budget,
# then one bin/evaluate over the four encoders (and the baselines).
#
#   recipes/table5_masking.sh <pretraining shards> <labeled shards> <workdir> [flags...]
#
# Flags after the workdir go to every bin/pretrain (e.g. --train_steps=200000).
# Environment: FLAGFILE (default configs/small.flags), EVALUATE_FLAGS (extra
# bin/evaluate flags), POLICIES (default "pm cfm ccm cfm+ccm").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# The binaries run with PYTHON, default: the repository's .venv (make install).
py=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}
if [ $# -lt 3 ]; then sed -n '2,10p' "$0"; exit 2; fi
pretrain_data=$1 labeled=$2 work=$3
shift 3
models=()
for policy in ${POLICIES:-pm cfm ccm cfm+ccm}; do
  dir="$work/pretrain-${policy/+/_}"
  "$py" "$repo/bin/pretrain" --flagfile="${FLAGFILE:-$repo/configs/small.flags}" --data="$pretrain_data" \
    --model_dir="$dir" --masking="$policy" "$@"
  models+=("$policy=$dir")
done
"$py" "$repo/bin/evaluate" --data="$labeled" --models="$(IFS=,; echo "${models[*]}")" \
  --output_dir="$work/evaluate" ${EVALUATE_FLAGS:-}
