"""What a pretraining run reads: its input spec (feature spec, normalization
and statistics, stored with the run) and its training and evaluation
pipelines' configs."""

import dataclasses

import tensorflow as tf

from m3bert_tf import runs
from m3bert_tf.data import pipeline, shards
from m3bert_tf.train.configs import PretrainConfig


def pipeline_config(
    config: PretrainConfig, batch_size: int, data: str = "", stats: dict | None = None
) -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(
        data=data or config.data,
        max_frames=config.max_frames,
        batch_size=batch_size,
        accumulation_steps=config.gradient_accumulation_steps,
        masking=config.masking,
        shuffle_buffer=config.shuffle_buffer,
        holdout_percent=config.holdout_percent,
        seed=config.seed,
        normalization=config.normalization,
        normalization_stats=stats,
        views=2 if config.objective.clip != "none" else 1,
    )


def make_eval_dataset(
    config: PretrainConfig, batch_size: int, stats: dict | None = None
) -> tf.data.Dataset:
    """Held-out examples with masks fixed by the seed: every evaluation sees the same."""
    if config.eval_data:
        pc = dataclasses.replace(
            pipeline_config(config, batch_size, config.eval_data, stats),
            holdout_percent=100,
        )
    else:
        pc = pipeline_config(config, batch_size, stats=stats)
    pc = dataclasses.replace(pc, accumulation_steps=1, seed=config.seed + 1_000_003)
    return pipeline.make_pretrain_dataset(pc, training=False).take(config.eval_batches)


def resolve_input_spec(config: PretrainConfig, run: runs.RunDir) -> dict:
    """What the run feeds its encoder (`runs.input_spec`): the data's feature
    spec and the normalization, with the global statistics when asked.

    Stored at the first start and reused on resume (the statistics are not
    recomputed from other data).

    Raises:
      runs.ConfigMismatch: `data` or `eval_data` is of another feature spec
        than the run was trained on (or than each other).
    """
    manifests = shards.read_manifests(config.data)
    specs = {d: m["feature_spec"] for d, m in manifests.items()}
    if config.eval_data:
        specs.update(
            {
                d: m["feature_spec"]
                for d, m in shards.read_manifests(config.eval_data).items()
            }
        )
    first_dir, feature_spec = next(iter(specs.items()))
    stored = runs.read_input_spec(run.path) if run.exists(runs.INPUT_SPEC_NAME) else None
    reference = stored["feature_spec"] if stored else feature_spec
    where = f"the run in {run.path}" if stored else first_dir
    for d, spec in specs.items():
        runs.check_same_features(reference, spec, d, where)
    if stored:
        return stored
    stats = (
        shards.normalization_stats(manifests) if config.normalization == "global" else None
    )
    return runs.input_spec(feature_spec, config.normalization, stats)
