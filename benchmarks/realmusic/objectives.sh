#!/usr/bin/env bash
# The pretraining objectives on the real-music benchmark: the tiny encoder
# pretrained 2000 steps with each objective (global normalization, as the
# benchmark's better row), then all of them evaluated together with 5 folds.
#
#   bash benchmarks/realmusic/objectives.sh <workdir of run.sh>
#
# Needs run.sh's shards (and its runs/pretrain_global, the paper's objective).
# About 110 minutes of pretraining and 55 of evaluation on 2 cores; every step
# resumes. The table: <workdir>/objectives/evaluate/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:?usage: bash benchmarks/realmusic/objectives.sh <workdir of run.sh>}
PY=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
O="$W/objectives"

pretrain() {
  local name=$1; shift
  "$PY" bin/pretrain --flagfile=configs/tiny.flags --data="$W/shards/pool" \
    --model_dir="$O/$name" --train_steps=2000 --normalization=global --snapshot_every=500 "$@"
}
pretrain tokens --objective=tokens --masking=span
pretrain reconstruct_tokens --objective=reconstruct+tokens --masking=span
pretrain tokens_clip --objective=tokens --masking=span --clip_objective=contrastive
pretrain reconstruct_clip --objective=reconstruct --clip_objective=contrastive
# Token targets under the paper's masking (cfm+ccm, the default)
pretrain tokens_cfm --objective=tokens
pretrain reconstruct_tokens_cfm --objective=reconstruct+tokens
# The Conformer block (--block=conformer), with the paper's objective and with
# reconstruct+tokens; evaluated together with their plain-block twins
pretrain conformer --block=conformer
pretrain conformer_reconstruct_tokens --block=conformer --objective=reconstruct+tokens
"$PY" bin/evaluate --data="$W/shards/labeled" --output_dir="$O/blocks" --folds=5 \
  --models="reconstruct=$W/runs/pretrain_global,conformer=$O/conformer,reconstruct+tokens=$O/reconstruct_tokens_cfm,conformer+tokens=$O/conformer_reconstruct_tokens" \
  --baselines=features,random
# The cpu_base sizes: configs/cpu_base.flags as it is (Conformer,
# reconstruct+tokens; about 48 minutes) against the paper's block and objective
# at the same sizes (about 21)
"$PY" bin/pretrain --flagfile=configs/cpu_base.flags --data="$W/shards/pool" --model_dir="$O/cpu_base"
"$PY" bin/pretrain --flagfile=configs/cpu_base.flags --data="$W/shards/pool" \
  --model_dir="$O/cpu_base_reconstruct" --block=transformer --objective=reconstruct
"$PY" bin/evaluate --data="$W/shards/labeled" --output_dir="$O/cpu_base_evaluate" --folds=5 \
  --models="cpu_base conformer+tokens=$O/cpu_base,cpu_base reconstruct=$O/cpu_base_reconstruct" \
  --baselines=features,random
"$PY" bin/evaluate --data="$W/shards/labeled" --output_dir="$O/cpu_base_curve" --folds=5 \
  --models="cpu_base conformer+tokens=$O/cpu_base@every" --baselines=features,random
"$PY" bin/evaluate --data="$W/shards/labeled" --output_dir="$O/evaluate" --folds=5 \
  --models="reconstruct=$W/runs/pretrain_global,tokens=$O/tokens,reconstruct+tokens=$O/reconstruct_tokens,tokens+clip=$O/tokens_clip,reconstruct+clip=$O/reconstruct_clip,tokens_cfm=$O/tokens_cfm,reconstruct+tokens_cfm=$O/reconstruct_tokens_cfm" \
  --baselines=mfcc,features,random
