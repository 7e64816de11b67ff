"""Pre-training masks as vectorized TensorFlow ops (no Python loop per example).

    inputs, masks = mask_compact(features, length, seed, config)   # the pipeline's
    weights = expand_weights(masks, padding_mask)                  # in the train step
    inputs, weights = mask_example(features, length, seed, config) # both at once

`features` is one [T, 324] float32 example of which the first `length` frames
are real and the rest padding. `inputs` is the masked copy; `weights` maps
each masked kind ("frame", "channel", "patch") and "total" to a [T, 324] 0/1
float32 tensor marking the elements that kind masked, i.e. the elements the
loss sees. Padded frames are never masked and never weighted. The pipeline
carries the masks compactly ("frame" [T] and "channel" [324] bool, "patch"
[T, 324] bool, or [1, 1] when the policy has no patches) and the training
step expands them: four [T, 324] float32 maps per example cost the input
pipeline more than the masking itself.

Every random draw is stateless, from `seed` ([2] int), so the same seed gives
the same mask eagerly and inside `Dataset.map`, on any number of threads.

Policies (docs/contract.md "Masking"):
- CFM: spans of frames until 15 % of the real frames are covered. Span length
  l ~ Geometric(p=0.2) truncated to [2, 7] and renormalized (mean 3.87, the
  paper's number; clipping instead would give a mean of 4.15), start uniform
  among the real frames. Per span (or per clip, `per_clip_choice`): 70 % zero,
  20 % replaced by a random span of the same track, 10 % unchanged. The loss
  sees all channels of every selected span.
- CCM: c ~ U{1..272} consecutive spectral channels starting at h ~ U{0..272-c}
  within channels 52..323, zero in every real frame.
- PM: s x s patches (frames x channels) sampled with replacement until 15 % of
  the real [length, 324] elements are covered, zeroed.
- SPAN (the masked-token encoders' masking: MusicFM, OMAR-RQ): the real
  frames cut into blocks of `span_frames` (17 frames, 0.4 s) from a random
  offset, each block masked with probability `span_prob` (0.6), its frames
  filled with Gaussian noise of std `span_noise` (0.1): about 60 % of the
  frames, the loss on every channel of them. (A per-frame *start*
  probability of 0.6 with 0.4 s spans would mask nearly every frame: the
  probability is per block, as MusicFM draws it.)
"""

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from m3bert_tf import schema

KINDS = ("frame", "channel", "patch")

# A policy is the components it applies (docs/contract.md "Masking"); a new policy
# is a row here, a new component a function and a row of COMPONENTS.
POLICIES = {
    "cfm+ccm": ("cfm", "ccm"),
    "cfm": ("cfm",),
    "ccm": ("ccm",),
    "pm": ("pm",),
    "span": ("span",),
}


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """How examples are masked (defaults: the paper's numbers). Nested in
    `PretrainConfig.masking`; `policy` is the flag --masking and
    `per_clip_choice` the flag --per_clip_mask_choice (their names of
    earlier releases), the others flags of their own names.

    Attributes:
      policy: masking policy, a name of POLICIES.
      frame_budget: fraction of real frames CFM covers.
      span_p: geometric parameter of CFM span lengths.
      min_span, max_span: CFM span length range, frames.
      zero_prob, replace_prob: CFM per-span choice; the rest stays unchanged.
      per_clip_choice: draw the zero/replace/keep choice once per clip (the
        authors' code) instead of once per span (the paper).
      patch_size: PM patch side (frames and channels).
      patch_budget: fraction of real elements PM covers.
      span_frames: SPAN block length, frames (17 = 0.4 s).
      span_prob: probability that a SPAN block is masked (the masked fraction).
      span_noise: std of the Gaussian noise SPAN fills masked frames with.
    """

    policy: str = dataclasses.field(
        default="cfm+ccm", metadata={"flag": "masking", "choices": tuple(POLICIES)}
    )
    frame_budget: float = 0.15
    span_p: float = 0.2
    min_span: int = 2
    max_span: int = 7
    zero_prob: float = 0.7
    replace_prob: float = 0.2
    per_clip_choice: bool = dataclasses.field(
        default=False, metadata={"flag": "per_clip_mask_choice"}
    )
    patch_size: int = 7
    patch_budget: float = 0.15
    span_frames: int = 17
    span_prob: float = 0.6
    span_noise: float = 0.1

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(
                f"masking must be one of {tuple(POLICIES)}, got {self.policy!r}"
            )
        if not 0 < self.frame_budget < 1 or not 0 < self.patch_budget < 1:
            raise ValueError("masking budgets must be in (0, 1)")
        if not 1 <= self.min_span <= self.max_span:
            raise ValueError(
                f"need 1 <= min_span <= max_span, got {self.min_span}, {self.max_span}"
            )
        if self.zero_prob + self.replace_prob > 1:
            raise ValueError("zero_prob + replace_prob must be <= 1")
        if self.span_frames < 1 or not 0 < self.span_prob < 1 or self.span_noise < 0:
            raise ValueError(
                "span_frames must be >= 1, span_prob in (0, 1) and span_noise >= 0, got "
                f"{self.span_frames}, {self.span_prob}, {self.span_noise}"
            )


def span_length_probs(config: MaskingConfig) -> list[float]:
    """P(l) for l in [min_span, max_span]: geometric, truncated and renormalized."""
    p = config.span_p
    w = [p * (1 - p) ** (k - 1) for k in range(config.min_span, config.max_span + 1)]
    return [x / sum(w) for x in w]


def _uniform(seed, shape):
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


def _randint(seed, shape, upper):
    """Integers uniform in [0, upper) (upper: int tensor broadcastable to shape)."""
    upper = tf.cast(upper, tf.float32)
    return tf.cast(tf.floor(_uniform(seed, shape) * upper), tf.int32)


def contiguous_frame_mask(features, length, seed, config: MaskingConfig):
    """CFM. Returns (source [T] int32: the frame each input frame is read from
    (itself, or a frame of the replacing span), zero [T] bool: frames zeroed,
    frame mask [T] bool: frames the loss sees)."""
    num_frames = tf.shape(features)[0]
    static_t = features.shape[0] or schema.CHUNK_FRAMES
    # Enough candidate spans to reach the budget even with overlaps.
    num_candidates = math.ceil(config.frame_budget * static_t / config.min_span) + 8
    seeds = tf.random.experimental.stateless_split(seed, 5)
    # At least one frame, so a very short example still teaches something.
    budget = tf.cast(tf.round(config.frame_budget * tf.cast(length, tf.float32)), tf.int32)
    budget = tf.minimum(tf.maximum(budget, 1), length)

    logits = tf.math.log([span_length_probs(config)])
    lengths = tf.random.stateless_categorical(
        logits, num_candidates, seeds[0], dtype=tf.int32
    )
    lengths = tf.minimum(lengths[0] + config.min_span, length)  # [K]
    starts = _randint(seeds[1], [num_candidates], length - lengths + 1)

    t = tf.range(num_frames)
    cover = (t[None, :] >= starts[:, None]) & (t[None, :] < (starts + lengths)[:, None])
    union = tf.cumsum(tf.cast(cover, tf.int32), axis=0) > 0  # first j+1 spans
    coverage = tf.reduce_sum(tf.cast(union, tf.int32), axis=1)  # [K]
    reached = coverage >= budget
    num_spans = tf.where(
        tf.reduce_any(reached), tf.argmax(tf.cast(reached, tf.int32), output_type=tf.int32) + 1,
        num_candidates,
    )  # fmt: skip
    num_spans = tf.where(budget > 0, num_spans, 0)
    cover &= (tf.range(num_candidates) < num_spans)[:, None]
    frame_mask = tf.reduce_any(cover, axis=0)  # [T]

    # The span that owns each frame (the first selected span covering it).
    owner = tf.argmax(tf.cast(cover, tf.int32), axis=0, output_type=tf.int32)  # [T]
    draws = _uniform(seeds[2], [num_candidates])
    if config.per_clip_choice:
        draws = tf.fill([num_candidates], draws[0])
    action = tf.where(
        draws < config.zero_prob,
        0,
        tf.where(draws < config.zero_prob + config.replace_prob, 1, 2),
    )  # 0 zero, 1 replace, 2 keep
    frame_action = tf.gather(action, owner)
    source_starts = _randint(seeds[3], [num_candidates], length - lengths + 1)
    source = tf.gather(source_starts, owner) + t - tf.gather(starts, owner)
    source = tf.clip_by_value(source, 0, tf.maximum(length - 1, 0))
    replace = frame_mask & tf.equal(frame_action, 1)
    zero = frame_mask & tf.equal(frame_action, 0)
    return tf.where(replace, source, t), zero, frame_mask


def contiguous_channel_mask(seed):
    """CCM. Returns the channels zeroed in every real frame, [C] bool."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    width = 1 + _randint(seeds[0], [], schema.NUM_SPECTRAL)  # U{1..272}
    start = _randint(seeds[1], [], schema.NUM_SPECTRAL - width + 1)  # U{0..272-c}
    channels = tf.range(schema.NUM_FEATURES) - schema.SPECTRAL_START
    return (channels >= start) & (channels < start + width)


def patch_mask(features, length, seed, config: MaskingConfig):
    """PM. Returns the elements zeroed, [T, C] bool."""
    num_frames, num_channels = tf.shape(features)[0], schema.NUM_FEATURES
    size = config.patch_size
    rows = tf.minimum(size, length)
    target = config.patch_budget * tf.cast(length * num_channels, tf.float32)
    area = tf.cast(rows * size, tf.float32)
    # Patches placed at random overlap: start from the count that covers the
    # budget in expectation, then top up until it is covered.
    total = tf.cast(length * num_channels, tf.float32)
    expected = tf.math.log(1.0 - config.patch_budget) / tf.math.log(1.0 - area / total)
    pad = [[size - 1, 0], [size - 1, 0]]

    def add_patches(starts_map, count, step):
        s = tf.random.experimental.stateless_fold_in(seed, step)
        s = tf.random.experimental.stateless_split(s, 2)
        r = _randint(s[0], [count], length - rows + 1)
        c = _randint(s[1], [count], num_channels - size + 1)
        updates = tf.ones([count], tf.float32)
        starts_map = tf.tensor_scatter_nd_max(starts_map, tf.stack([r, c], 1), updates)
        # A patch covers [r, r + rows) x [c, c + size): dilate the starts.
        padded = tf.pad(starts_map, pad)[None, :, :, None]
        covered = tf.nn.max_pool2d(padded, [size, size], 1, "VALID")[0, :, :, 0]
        row_ok = tf.range(num_frames) < length
        covered *= tf.cast(row_ok, tf.float32)[:, None]
        return starts_map, covered

    count = tf.maximum(tf.cast(tf.math.ceil(expected), tf.int32), 1)
    starts_map, covered = add_patches(tf.zeros([num_frames, num_channels]), count, 0)

    def cond(step, starts_map, covered):
        return (tf.reduce_sum(covered) < target) & (step < 50)

    def body(step, starts_map, covered):
        deficit = target - tf.reduce_sum(covered)
        more = tf.maximum(tf.cast(tf.math.ceil(deficit / area), tf.int32), 1)
        starts_map, covered = add_patches(starts_map, more, step)
        return step + 1, starts_map, covered

    _, _, covered = tf.while_loop(cond, body, [1, starts_map, covered])
    return covered > 0


def span_mask(features, length, seed, config: MaskingConfig):
    """SPAN. Returns the frames masked, [T] bool: blocks of `span_frames` laid
    from a random offset, each kept with probability `span_prob`, at least
    one real frame."""
    num_frames = tf.shape(features)[0]
    size = config.span_frames
    seeds = tf.random.experimental.stateless_split(seed, 2)
    offset = _randint(seeds[0], [], size)
    block = (tf.range(num_frames) + offset) // size
    chosen = _uniform(seeds[1], [num_frames // size + 2]) < config.span_prob
    real = tf.range(num_frames) < length
    frames = tf.gather(chosen, block) & real
    # At least one frame, so a very short example still teaches something.
    first = tf.equal(tf.range(num_frames), 0) & (length > 0)
    return tf.where(tf.reduce_any(frames), frames, first)


def _cfm(features, length, seed, config):
    source, zero, frame = contiguous_frame_mask(features, length, seed, config)
    return {"source": source, "zero": zero, "frame": frame}


def _ccm(features, length, seed, config):
    return {"channel": contiguous_channel_mask(seed)}


def _pm(features, length, seed, config):
    return {"patch": patch_mask(features, length, seed, config)}


def _span(features, length, seed, config):
    frames = span_mask(features, length, seed, config)
    return {"frame": frames, "noise": frames}


class Component(NamedTuple):
    """One masking component: `apply(features, length, seed, config)` returns
    the compact masks it fills ("frame", "channel" or "patch") and, for frame
    masking, "zero" [T] bool (frames zeroed), "noise" [T] bool (frames
    filled with noise) or "source" [T] int32 (the frame each input frame is
    read from)."""

    apply: Callable
    seed_index: int  # its stream of the example's seed: the same in every policy


COMPONENTS = {
    "cfm": Component(_cfm, 0),
    "ccm": Component(_ccm, 1),
    "pm": Component(_pm, 2),
    "span": Component(_span, 3),
}
_SPLIT = 3  # the first components' seeds: split 3 ways, as before SPAN existed


def _component_seed(seed, index: int):
    """The stream of component `index` of an example's seed."""
    if index < _SPLIT:
        return tf.random.experimental.stateless_split(seed, _SPLIT)[index]
    return tf.random.experimental.stateless_fold_in(seed, index)


if _missing := {c for row in POLICIES.values() for c in row} - set(COMPONENTS):
    raise TypeError(f"POLICIES name components without a COMPONENTS row: {_missing}")


def mask_compact(features, length, seed, config: MaskingConfig):
    """Masks one example under `config.policy`, in one pass over its elements.

    Args:
      features: [T, 324] float32, frames >= length are padding.
      length: int32 scalar, real frames.
      seed: [2] int32/int64 stateless seed.

    Returns:
      (inputs [T, 324] float32, {"frame": [T] bool, "channel": [324] bool,
      "patch": [T, 324] bool, or [1, 1] False without patch masking}).
    """
    seed = tf.cast(seed, tf.int64)
    length = tf.cast(length, tf.int32)
    num_frames = tf.shape(features)[0]
    valid = tf.range(num_frames) < length
    out = {
        "zero": tf.zeros([num_frames], tf.bool),
        "noise": tf.zeros([num_frames], tf.bool),
        "frame": tf.zeros([num_frames], tf.bool),
        "channel": tf.zeros([schema.NUM_FEATURES], tf.bool),
        "patch": tf.zeros([1, 1], tf.bool),
    }
    for name in POLICIES[config.policy]:
        component = COMPONENTS[name]
        component_seed = _component_seed(seed, component.seed_index)
        out.update(component.apply(features, length, component_seed, config))
    zeroed = (
        out["zero"][:, None] | (valid[:, None] & out["channel"][None, :]) | out["patch"]
    )
    if "source" in out:
        features = tf.gather(features, out["source"])  # replaced spans read elsewhere
    inputs = tf.where(zeroed, 0.0, features)
    if "span" in POLICIES[config.policy]:
        noise_seed = tf.random.experimental.stateless_fold_in(seed, 1000)
        noise = config.span_noise * tf.random.stateless_normal(tf.shape(inputs), noise_seed)
        inputs = tf.where(out["noise"][:, None], noise, inputs)
    return inputs, {kind: out[kind] for kind in KINDS}


def expand_weights(masks: dict, padding_mask) -> dict:
    """Compact masks (`mask_compact`, batched or not) -> {"frame", "channel",
    "patch", "total": [..., T, 324] float32 0/1 loss weights}.

    Args:
      masks: {"frame": [..., T], "channel": [..., 324], "patch": [..., T, 324]
        or [..., 1, 1]} bool.
      padding_mask: [..., T] bool, True on real frames.
    """
    frame = masks["frame"][..., :, None]
    channel = padding_mask[..., :, None] & masks["channel"][..., None, :]
    patch = masks["patch"]
    total = frame | channel | patch
    shape = tf.shape(total)
    weights = {
        "frame": tf.broadcast_to(frame, shape),
        "channel": tf.broadcast_to(channel, shape),
        "patch": tf.broadcast_to(patch, shape),
        "total": total,
    }
    return {k: tf.cast(v, tf.float32) for k, v in weights.items()}


def mask_example(features, length, seed, config: MaskingConfig):
    """`mask_compact` with its weights expanded: (inputs [T, 324] float32,
    {"total", "frame", "channel", "patch": [T, 324] float32 0/1 weights})."""
    inputs, masks = mask_compact(features, length, seed, config)
    padding_mask = tf.range(tf.shape(features)[0]) < tf.cast(length, tf.int32)
    return inputs, expand_weights(masks, padding_mask)
