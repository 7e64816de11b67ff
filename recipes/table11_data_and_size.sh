#!/usr/bin/env bash
# Paper Table 11: pre-training on growing subsets of the corpus, for two
# model sizes, then one bin/evaluate over every encoder.
#
#   recipes/table11_data_and_size.sh <audio manifest.csv> <labeled shards> <workdir>
#
# The subsets are the first N% of the manifest's rows (shuffle it first for a
# random subset), each extracted to its own shard directory.
# Environment: PERCENTS (default "25 50 100"), SIZES (flagfiles, default
# "configs/small.flags configs/large.flags"), PRETRAIN_FLAGS, EXTRACT_FLAGS,
# EVALUATE_FLAGS.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# The binaries run with PYTHON, default: the repository's .venv (make install).
py=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}
if [ $# -lt 3 ]; then sed -n '2,12p' "$0"; exit 2; fi
manifest=$1 labeled=$2 work=$3
mkdir -p "$work"
models=()
for percent in ${PERCENTS:-25 50 100}; do
  subset="$work/manifest-$percent.csv"
  # The first rows, their paths made absolute (the subset lives elsewhere).
  "$py" - "$manifest" "$subset" "$percent" <<'PY'
import csv, math, os, sys
source, target, percent = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(source, newline="") as f:
    rows = list(csv.DictReader(f))
base = os.path.dirname(os.path.abspath(source))
with open(target, "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    for row in rows[: math.ceil(len(rows) * percent / 100)]:
        writer.writerow({**row, "path": os.path.join(base, row["path"])})
PY
  "$py" "$repo/bin/extract" --input="$subset" --output_dir="$work/shards-$percent" ${EXTRACT_FLAGS:-}
  for flagfile in ${SIZES:-$repo/configs/small.flags $repo/configs/large.flags}; do
    size=$(basename "$flagfile" .flags)
    "$py" "$repo/bin/pretrain" --flagfile="$flagfile" --data="$work/shards-$percent" \
      --model_dir="$work/pretrain-$size-$percent" ${PRETRAIN_FLAGS:-}
    models+=("$size $percent%=$work/pretrain-$size-$percent")
  done
done
"$py" "$repo/bin/evaluate" --data="$labeled" --models="$(IFS=,; echo "${models[*]}")" \
  --output_dir="$work/evaluate" ${EVALUATE_FLAGS:-}
