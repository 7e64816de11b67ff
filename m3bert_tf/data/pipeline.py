"""The pre-training input pipeline (TensorFlow, no Keras).

    shard files -> shard across input pipelines -> per pass: a permutation of
      the files, cut in groups of 8 (units) -> per unit: its files read
      interleaved -> hold out tracks -> permute each window of
      `shuffle_buffer` examples -> parse -> crop/pad -> mask
      -> batch (per replica) -> [batch again for gradient accumulation]
      -> [tf.data service] -> prefetch

Each element is `(inputs, targets, masks)`:
  inputs  {"features": [B, T, 324] float32 masked, "padding_mask": [B, T] bool}
  targets [B, T, 324] float32, the clean frames
  masks   {"frame": [B, T], "channel": [B, 324], "patch": [B, T, 324] or
           [B, 1, 1]} bool: what was masked, compactly
           (`masking.expand_weights` makes the loss weights of them)
with T = max_frames. With gradient accumulation every tensor gets a leading
[accumulation_steps] axis.

The training stream is addressed by position: the file order of pass e, the
permutation of window j of group g and each example's crop and masks all
draw from stateless seeds ((seed, e), (seed, e, g, j), (seed, position)),
and every shard's count of training examples is known from its index. So
`make_pretrain_dataset(config, start=p)` begins exactly at example p of the
stream, reading at most one group of files to get there, and a checkpoint
needs only the step, not the input's buffers. Units are independent of
each other, so tf.data service workers can each take whole units.
"""

import dataclasses

import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import masking as masking_lib
from m3bert_tf.data import records
from m3bert_tf.data.normalization import normalize
from m3bert_tf.data.shards import DataError, list_shards, read_index

GROUP_FILES = 8  # shard files read at once (interleaved)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline reads and how it batches.

    Attributes:
      data: shard file glob(s), comma-separated, or a directory of shards.
      max_frames: T; longer examples are randomly cropped, shorter padded.
      batch_size: examples per replica per micro-batch.
      accumulation_steps: micro-batches per optimizer step (> 1 adds an axis).
      masking: the masking policy.
      shuffle_buffer: examples permuted together (consecutive windows of
        the stream; nothing of it is checkpointed).
      holdout_percent: tracks (by hash of track_id) held out for evaluation.
      seed: base seed of file order, crops and masks.
      normalization: "track", "global" or "none" (`normalization.py`).
      normalization_stats: the global statistics ("global" only).
      views: crops of each record, adjacent in the stream and in a batch
        (2 for a clip objective: its positives; `batch_size` must be even).
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
    views: int = 1

    def __post_init__(self):
        if self.views < 1 or self.batch_size % self.views:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of views={self.views} "
                "(a record's crops share a batch)"
            )


@dataclasses.dataclass(frozen=True)
class DataService:
    """Where the training pipeline runs: a tf.data service dispatcher
    ("grpc://host:port") and the job name its workers serve (one per input
    pipeline and start, so a resumed run starts a new job)."""

    address: str
    job_name: str


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


def pair_views(ds: tf.data.Dataset, views: int) -> tf.data.Dataset:
    """(position, record) -> `views` consecutive (views x position + v, record):
    the crops of one record, adjacent, each with its own crop and mask seed."""
    if views == 1:
        return ds
    offsets = tf.range(views, dtype=tf.int64)
    return ds.flat_map(
        lambda p, s: tf.data.Dataset.from_tensor_slices(
            (tf.cast(p, tf.int64) * views + offsets, tf.fill([views], s))
        )
    )


def make_example_fn(config: PipelineConfig):
    """(position, serialized) -> (inputs, targets, masks) for one example."""

    def fn(position, serialized):
        seed = tf.stack([tf.constant(config.seed, tf.int64), position])
        crop_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        frames = normalized_features(
            records.parse_example(serialized),
            config.normalization,
            config.normalization_stats,
        )
        targets, length = crop_or_pad(frames, config.max_frames, crop_seed)
        inputs, masks = masking_lib.mask_compact(targets, length, mask_seed, config.masking)
        padding_mask = tf.range(config.max_frames) < length
        return {"features": inputs, "padding_mask": padding_mask}, targets, masks

    return fn


def training_counts(files: list[str], holdout_percent: int) -> list[int]:
    """Examples per shard file that are not held out, from the shard indexes
    (a file without a matching index is counted by reading it)."""
    counts = []
    for f in files:
        info = read_index(f)
        if info is None:
            heldout = tf.data.TFRecordDataset(f).map(
                lambda s: is_heldout(s, holdout_percent)
            )
            counts.append(int(heldout.reduce(0, lambda n, h: n + 1 - tf.cast(h, tf.int32))))
            continue
        chunks = [int(t["num_chunks"]) for t in info["tracks"]]
        ids = [t["track_id"] for t in info["tracks"]]
        held = (
            tf.strings.to_hash_bucket_fast(ids, 100).numpy() < holdout_percent
            if ids
            else []
        )
        counts.append(sum(c for c, h in zip(chunks, held, strict=True) if not h))
    return counts


def _file_order(num_files: int, seed, epoch):
    """[num_files] int32: the file order of pass `epoch` (stateless)."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([num_files], key))


class _Units:
    """The training stream cut into units: unit u is group g of pass e
    (u = e x groups + g), the group being `GROUP_FILES` consecutive files of
    the pass's file order. A unit's examples are its files interleaved, the
    held-out tracks dropped, each window of `shuffle_buffer` permuted; its
    first example is at stream position `start(u)`. Units are independent,
    which lets tf.data service hand them to its workers (dynamic sharding)."""

    def __init__(self, files: list[str], config: PipelineConfig):
        self.files, self.config = files, config
        self.counts = training_counts(files, config.holdout_percent)
        self.per_pass = sum(self.counts)
        self.group = min(len(files), GROUP_FILES)
        self.groups = -(-len(files) // self.group)

    def group_counts(self, epoch):
        """[groups] int64: training examples per group of pass `epoch`."""
        order = _file_order(len(self.files), self.config.seed, epoch)
        counts = tf.gather(tf.constant(self.counts, tf.int64), order)
        padded = tf.pad(counts, [[0, self.groups * self.group - len(self.files)]])
        return tf.reduce_sum(tf.reshape(padded, [self.groups, self.group]), axis=1)

    def examples(self, unit):
        """(position, serialized) of unit `unit`'s training examples."""
        config, unit = self.config, tf.cast(unit, tf.int64)
        epoch, g = unit // self.groups, unit % self.groups
        order = _file_order(len(self.files), config.seed, epoch)
        names = tf.gather(tf.constant(self.files), order)[
            g * self.group : (g + 1) * self.group
        ]
        ds = tf.data.Dataset.from_tensor_slices(names).interleave(
            tf.data.TFRecordDataset, cycle_length=self.group, block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )  # fmt: skip
        ds = ds.filter(lambda s: tf.logical_not(is_heldout(s, config.holdout_percent)))

        def permute(j, window):
            key = tf.stack([tf.constant(config.seed + 1, tf.int64), epoch])
            key = tf.random.experimental.stateless_fold_in(key, g)
            key = tf.random.experimental.stateless_fold_in(key, j)
            order = tf.argsort(tf.random.stateless_uniform([tf.shape(window)[0]], key))
            return tf.gather(window, order)

        ds = ds.batch(config.shuffle_buffer).enumerate().map(permute).unbatch()
        first = epoch * self.per_pass + tf.reduce_sum(self.group_counts(epoch)[:g])
        return ds.enumerate().map(lambda k, s: (first + k, s))

    def first_unit(self, position: int) -> int:
        """The unit holding stream position `position`."""
        epoch, offset = divmod(position, self.per_pass)
        counts = self.group_counts(epoch).numpy()
        g = 0
        while g < self.groups - 1 and offset >= counts[g]:
            offset -= counts[g]
            g += 1
        return epoch * self.groups + g


def positioned_stream(
    files: list[str], config: PipelineConfig, start: int, passes: int | None = None
) -> tf.data.Dataset:
    """(position, serialized) of the training stream from position `start`:
    endless, or `passes` passes over the data (tests). Its source is the
    range of unit numbers, so tf.data service's dynamic sharding splits it
    by unit."""
    units = _Units(files, config)
    if units.per_pass == 0:
        raise DataError(
            f"data={config.data}: every example is held out (holdout_percent="
            f"{config.holdout_percent}); nothing to train on"
        )
    end = units.groups * passes if passes else 2**62
    ds = tf.data.Dataset.range(units.first_unit(start), end).flat_map(units.examples)
    return ds.filter(lambda p, s: p >= start)


def training_stream(
    files: list[str], config: PipelineConfig, start: int
) -> tf.data.Dataset:
    """Serialized training examples from position `start` of the endless stream."""
    return positioned_stream(files, config, start).map(lambda p, s: s)


def shards_by_record(num_files: int, num_pipelines: int) -> bool:
    """Whether `num_pipelines` input pipelines split the data by example (fewer
    files than pipelines: each reads every file) rather than by file."""
    return 1 < num_pipelines and num_files < num_pipelines


def pipeline_files(files: list[str], num_pipelines: int, index: int) -> list[str]:
    """The shard files input pipeline `index` of `num_pipelines` reads: every
    Nth from its index on, or all of them when they split by record."""
    if num_pipelines > 1 and not shards_by_record(len(files), num_pipelines):
        return files[index::num_pipelines]
    return list(files)


def make_pretrain_dataset(
    config: PipelineConfig,
    training: bool = True,
    input_context=None,
    start: int = 0,
    service: DataService | None = None,
    passes: int | None = None,
) -> tf.data.Dataset:
    """The batched dataset for one input pipeline.

    Args:
      config: what to read and how.
      training: True: the non-held-out tracks, shuffled, repeated forever.
        False: the held-out tracks, in file order, once (evaluation).
      input_context: a `tf.distribute.InputContext`: shard files across input
        pipelines (each worker reads different files; with fewer files than
        pipelines, every pipeline reads all of them and keeps every Nth
        example of the stream, `shards_by_record`).
      start: training only: the first example of this pipeline's stream
        (examples it consumed before, views counted; a resumed run passes
        step x global batch / pipelines).
      service: training only: run everything up to the batches on these
        tf.data service workers, each taking whole units of the stream
        (dynamic sharding: every example once, in an order that depends on
        which worker answers first; with one worker, the local order).
      passes: training only: stop after this many passes (None = endless).
    """
    pipelines, index = 1, 0
    if input_context is not None:
        pipelines, index = (
            input_context.num_input_pipelines,
            input_context.input_pipeline_id,
        )
    every_file = list_shards(config.data)
    files = pipeline_files(every_file, pipelines, index)
    by_record = shards_by_record(len(every_file), pipelines)
    start //= config.views  # a record's views are consumed together
    if training:
        if by_record:  # every pipeline reads every file and keeps every Nth example
            ds = positioned_stream(files, config, start * pipelines + index, passes)
            ds = ds.filter(lambda p, s: p % pipelines == index)
        else:  # crop and mask seeds from a position unique across pipelines
            ds = positioned_stream(files, config, start, passes)
            ds = ds.map(lambda p, s: (p * pipelines + index, s))
    else:
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), GROUP_FILES),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )  # fmt: skip
        ds = ds.filter(lambda s: is_heldout(s, config.holdout_percent)).enumerate()
    ds = pair_views(ds, config.views)
    ds = ds.map(
        make_example_fn(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    # Training drops the remainder: static shapes, which XLA and
    # MirroredStrategy need. Evaluation keeps every held-out example.
    ds = ds.batch(config.batch_size, drop_remainder=training)
    if config.accumulation_steps > 1:
        ds = ds.batch(config.accumulation_steps, drop_remainder=True)
    if training and service is not None:
        ds = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
                service=service.address,
                job_name=service.job_name,
                # Masked float features barely compress; compressing cost the
                # workers and the trainer more CPU than the transfer saved.
                compression=None,
            )
        )
    return ds.prefetch(tf.data.AUTOTUNE)
