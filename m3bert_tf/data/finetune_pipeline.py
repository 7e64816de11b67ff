"""The multi-task fine-tuning input pipeline (TensorFlow, no Keras).

    one dataset per task: shards -> keep the task's labeled examples of the
      split (a parse of two small keys) -> parse -> normalize -> crop/pad
      -> (inputs, labels, weights)
    training: shuffle + repeat each, then sample_from_datasets with
      P(task) proportional to size^temperature -> batch -> prefetch

Each element is `(inputs, labels, weights)`:
  inputs  {"features": [B, T, 324], "padding_mask": [B, T] bool}
  labels  {task: [B, size] float32}   (zeros where not labeled)
  weights {task: [B] float32}         1 for the example's own task, else 0
Every example counts for its own task only, even when its record labels
several (it then appears once in each of those tasks' datasets). Keras 3
rejects `class_weight` for multi-output models; these sample-weight dicts
are the way.
"""

import dataclasses

import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import records
from m3bert_tf.data.pipeline import crop_or_pad, normalized_features
from m3bert_tf.data.shards import list_shards
from m3bert_tf.tasks import TaskSpec, merge_specs


@dataclasses.dataclass(frozen=True)
class FinetuneDataConfig:
    """What to read.

    Attributes:
      data: labeled shard dirs or globs, comma-separated (each dir has the
        manifest.json that `bin/extract` wrote).
      tasks: the tasks to train, in head order.
      max_frames: example length (random crop when training, the first
        max_frames otherwise).
      batch_size: examples per batch.
      temperature: task sampling P(t) ~ n_t^temperature (1 = proportional to
        size, 0 = uniform).
      shuffle_buffer: examples per task shuffle buffer.
      seed: order, crops and task draws.
      normalization, normalization_stats: as in `pipeline.PipelineConfig`.
    """

    data: str
    tasks: tuple[str, ...]
    max_frames: int = schema.CHUNK_FRAMES
    batch_size: int = 16
    temperature: float = 1.0
    shuffle_buffer: int = 64
    seed: int = 0
    normalization: str = "track"
    normalization_stats: dict | None = None


def read_task_info(
    manifests: dict[str, dict],
) -> tuple[dict[str, TaskSpec], dict[str, dict[str, int]]]:
    """({task: spec}, {task: {split: examples}}) from `shards.read_manifests`' result."""
    specs, counts = [], {}
    for manifest in manifests.values():
        specs.extend(TaskSpec.from_json(v) for v in manifest.get("tasks", {}).values())
        for task, per_split in manifest.get("label_counts", {}).items():
            for split, n in per_split.items():
                counts.setdefault(task, {}).setdefault(split, 0)
                counts[task][split] += n
    return merge_specs(specs), counts


def mixing_probabilities(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    """P(task) proportional to size**temperature (0 gives uniform)."""
    powered = {t: float(n) ** temperature if n > 0 else 0.0 for t, n in sizes.items()}
    total = sum(powered.values())
    if total <= 0:
        raise ValueError(f"no training examples for any of the tasks {sorted(sizes)}")
    return {t: p / total for t, p in powered.items()}


def is_labeled_in_split(serialized, task: str, split: str):
    """True when a record is of `split` and labels `task` (parses two small keys only)."""
    ex = tf.io.parse_single_example(
        serialized,
        {
            schema.SPLIT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
            schema.LABEL_PREFIX + task: tf.io.VarLenFeature(tf.float32),
        },
    )
    labeled = tf.size(ex[schema.LABEL_PREFIX + task].values) > 0
    return labeled & tf.equal(ex[schema.SPLIT_KEY], split)


def make_task_dataset(config, specs, task, split, training) -> tf.data.Dataset:
    """The examples of `split` labeled for `task`, each weighted for `task` only."""
    sizes = {t: specs[t].size for t in config.tasks}
    files = list_shards(config.data)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(
            len(files), seed=config.seed, reshuffle_each_iteration=True
        ).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )  # fmt: skip
    ds = ds.filter(lambda s: is_labeled_in_split(s, task, split))
    ds = ds.map(
        lambda s: records.parse_example(s, sizes), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed + 1)
    task_index = config.tasks.index(task)

    def to_element(position, ex):
        seed = tf.stack([tf.constant(config.seed + task_index, tf.int64), position])
        frames = normalized_features(ex, config.normalization, config.normalization_stats)
        if not training:  # evaluation: the same frames every time
            frames = frames[: config.max_frames]
        features, length = crop_or_pad(frames, config.max_frames, seed)
        inputs = {
            "features": features,
            "padding_mask": tf.range(config.max_frames) < length,
        }
        labels = {t: ex[schema.LABEL_PREFIX + t] for t in config.tasks}
        weights = {t: tf.constant(1.0 if t == task else 0.0) for t in config.tasks}
        return inputs, labels, weights

    return ds.enumerate().map(
        to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def make_finetune_dataset(
    config: FinetuneDataConfig, specs, counts, split="train", training=True
):
    """Batched (inputs, labels, weights); training mixes tasks by temperature."""
    per_task = [make_task_dataset(config, specs, t, split, training) for t in config.tasks]
    if training:
        probs = mixing_probabilities(
            {t: counts.get(t, {}).get(split, 0) for t in config.tasks}, config.temperature
        )
        ds = tf.data.Dataset.sample_from_datasets(
            per_task, weights=[probs[t] for t in config.tasks], seed=config.seed + 2
        )
        ds = ds.batch(config.batch_size, drop_remainder=True)
    else:
        ds = per_task[0]
        for other in per_task[1:]:
            ds = ds.concatenate(other)
        ds = ds.batch(config.batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
