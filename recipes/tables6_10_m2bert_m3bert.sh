#!/usr/bin/env bash
# Paper Tables 6-10: pre-train (M2BERT), fine-tune on every task at once
# (M3BERT), and probe both against the baselines on each dataset's splits.
#
#   recipes/tables6_10_m2bert_m3bert.sh <pretraining shards> <labeled shards> <workdir>
#
# <labeled shards>: comma-separated shard dirs, one per dataset (bin/extract
# --dataset=gtzan|ballroom|jamendo|deam|rwc ...): one table per task.
# Environment: FLAGFILE (default configs/small.flags), FINETUNE_FLAGS,
# PRETRAIN_FLAGS, EVALUATE_FLAGS (extra flags of each binary).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# The binaries run with PYTHON, default: the repository's .venv (make install).
py=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}
if [ $# -lt 3 ]; then sed -n '2,11p' "$0"; exit 2; fi
pretrain_data=$1 labeled=$2 work=$3
"$py" "$repo/bin/pretrain" --flagfile="${FLAGFILE:-$repo/configs/small.flags}" --data="$pretrain_data" \
  --model_dir="$work/pretrain" ${PRETRAIN_FLAGS:-}
"$py" "$repo/bin/finetune" --pretrained="$work/pretrain" --data="$labeled" --model_dir="$work/finetune" \
  ${FINETUNE_FLAGS:-}
# A fine-tuned run gives two rows: M3BERT (its enrichment layer) and M2BERT
# (its frozen encoder, the pre-trained one).
"$py" "$repo/bin/evaluate" --data="$labeled" --models="m3bert=$work/finetune" \
  --output_dir="$work/evaluate" ${EVALUATE_FLAGS:-}
