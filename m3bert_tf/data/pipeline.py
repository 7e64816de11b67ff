"""The pre-training input pipeline (TensorFlow, no Keras).

    shard files -> shard across input pipelines -> shuffle files -> interleave
      -> hold out tracks -> shuffle examples -> parse -> crop/pad -> mask
      -> batch (per replica) -> [batch again for gradient accumulation] -> prefetch

Each element is `(inputs, targets, weights)`:
  inputs  {"features": [B, T, 324] float32 masked, "padding_mask": [B, T] bool}
  targets [B, T, 324] float32, the clean frames
  weights {"total", "frame", "channel", "patch": [B, T, 324] float32 0/1}
with T = max_frames. With gradient accumulation every tensor gets a leading
[accumulation_steps] axis.

Crop offsets and masks draw from stateless seeds (seed, position in the
stream), so a run is reproducible and its iterator checkpoint resumes it.
"""

import dataclasses

import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import masking as masking_lib
from m3bert_tf.data import records
from m3bert_tf.data.normalization import normalize
from m3bert_tf.data.shards import list_shards


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline reads and how it batches.

    Attributes:
      data: shard file glob(s), comma-separated, or a directory of shards.
      max_frames: T; longer examples are randomly cropped, shorter padded.
      batch_size: examples per replica per micro-batch.
      accumulation_steps: micro-batches per optimizer step (> 1 adds an axis).
      masking: the masking policy.
      shuffle_buffer: examples in the shuffle buffer (checkpointed with the
        iterator: keep it modest).
      holdout_percent: tracks (by hash of track_id) held out for evaluation.
      seed: base seed of file order, crops and masks.
      normalization: "track", "global" or "none" (`normalization.py`).
      normalization_stats: the global statistics ("global" only).
    """

    data: str
    max_frames: int = schema.CHUNK_FRAMES
    batch_size: int = 8
    accumulation_steps: int = 1
    masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig()
    shuffle_buffer: int = 64
    holdout_percent: int = 5
    seed: int = 0
    normalization: str = "track"
    normalization_stats: dict | None = None


def is_heldout(serialized, holdout_percent):
    """True for the examples of tracks whose id hashes into the held-out part."""
    track = tf.io.parse_single_example(
        serialized, {schema.TRACK_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
    )[schema.TRACK_ID_KEY]
    return tf.strings.to_hash_bucket_fast(track, 100) < holdout_percent


def crop_or_pad(frames, max_frames, seed):
    """[n, 324] -> ([max_frames, 324], real length): a random crop or zero padding."""
    n = tf.shape(frames)[0]
    offset_range = tf.maximum(n - max_frames, 0) + 1
    offset = tf.cast(
        tf.floor(tf.random.stateless_uniform([], seed) * tf.cast(offset_range, tf.float32)),
        tf.int32,
    )
    crop = frames[offset : offset + max_frames]
    length = tf.shape(crop)[0]
    padded = tf.pad(crop, [[0, max_frames - length], [0, 0]])
    return tf.ensure_shape(padded, [max_frames, schema.NUM_FEATURES]), length


def normalized_features(parsed: dict, mode: str, stats: dict | None):
    """The [T, 324] features of a parsed record, normalized as `mode` says."""
    return normalize(
        parsed[schema.FEATURES_KEY],
        parsed[schema.TRACK_MEAN_KEY],
        parsed[schema.TRACK_STD_KEY],
        mode,
        stats,
    )


def make_example_fn(config: PipelineConfig):
    """(position, serialized) -> (inputs, targets, weights) for one example."""

    def fn(position, serialized):
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        crop_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        frames = normalized_features(
            records.parse_example(serialized),
            config.normalization,
            config.normalization_stats,
        )
        targets, length = crop_or_pad(frames, config.max_frames, crop_seed)
        inputs, weights = masking_lib.mask_example(
            targets, length, mask_seed, config.masking
        )
        padding_mask = tf.range(config.max_frames) < length
        return {"features": inputs, "padding_mask": padding_mask}, targets, weights

    return fn


def make_pretrain_dataset(
    config: PipelineConfig, training: bool = True, input_context=None
) -> tf.data.Dataset:
    """The batched dataset for one input pipeline.

    Args:
      config: what to read and how.
      training: True: the non-held-out tracks, shuffled, repeated forever.
        False: the held-out tracks, in file order, once (evaluation).
      input_context: a `tf.distribute.InputContext`: shard files across input
        pipelines (each worker reads different files).
    """
    files = list_shards(config.data)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(
                f"--data has {len(files)} shards for {input_context.num_input_pipelines} "
                "input pipelines: write smaller shards (bin/extract --shard_size)"
            )
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        # Reshuffle file order every pass; repeat before interleave so the
        # stream never ends at an epoch boundary.
        ds = ds.shuffle(
            len(files), seed=config.seed, reshuffle_each_iteration=True
        ).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    holdout = config.holdout_percent
    if training:
        ds = ds.filter(lambda s: tf.logical_not(is_heldout(s, holdout)))
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed + 1)
    else:
        ds = ds.filter(lambda s: is_heldout(s, holdout))
    ds = ds.enumerate()
    ds = ds.map(
        make_example_fn(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    # Training drops the remainder: static shapes, which XLA and
    # MirroredStrategy need. Evaluation keeps every held-out example.
    ds = ds.batch(config.batch_size, drop_remainder=training)
    if config.accumulation_steps > 1:
        ds = ds.batch(config.accumulation_steps, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
