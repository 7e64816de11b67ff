#!/usr/bin/env bash
# The real-music benchmark end to end: build it from Debian's packages,
# extract, pretrain the tiny encoder with both normalizations (snapshots for
# the learning curves), fine-tune each on the soundtrack task, evaluate all
# of them against mfcc, features and the random twin with equal pooling,
# added-value rows and 5 folds grouped by track.
#
#   bash benchmarks/realmusic/run.sh <workdir> [pretraining steps, default 2000]
#
# Needs `apt-get download` (Debian's archive) and `make install`; about 30
# minutes on 2 cores. Every step resumes: rerun the same command after an
# interruption. The tables: <workdir>/evaluate/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:?usage: bash benchmarks/realmusic/run.sh <workdir> [steps]}
STEPS=${2:-2000}
PY=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

"$PY" benchmarks/realmusic/build.py --output_dir="$W/bench"
"$PY" bin/extract --input="$W/bench/pool.csv" --output_dir="$W/shards/pool"
"$PY" bin/extract --input="$W/bench/labeled.csv" --output_dir="$W/shards/labeled"
for norm in track global; do
  "$PY" bin/pretrain --flagfile=configs/tiny.flags --data="$W/shards/pool" \
    --model_dir="$W/runs/pretrain_$norm" --train_steps="$STEPS" --normalization="$norm" \
    --snapshot_every=$((STEPS / 4))
  "$PY" bin/finetune --flagfile=configs/tiny_finetune.flags --pretrained="$W/runs/pretrain_$norm" \
    --data="$W/shards/labeled" --model_dir="$W/runs/finetune_$norm"
done
"$PY" bin/evaluate --data="$W/shards/labeled" --output_dir="$W/evaluate" --folds=5 \
  --models="track=$W/runs/finetune_track,global=$W/runs/finetune_global,track=$W/runs/pretrain_track@every,global=$W/runs/pretrain_global@every" \
  --baselines=mfcc,features,random
