"""The baselines every encoder is judged against: one table, `BASELINES`.

    BASELINES["mfcc"].what                 # a line for results.md
    register(Baseline("rms", "the RMS of each frame", frames=...))

A baseline is either a view of an example's raw input frames (`frames`:
[T, 324] float64 -> [T, D], whose statistics over time are computed while
the examples are read and cached with them, then pooled like every other
set: `pooling.py`), or an encoder built from the first model (`from_model`,
the random-weight control). The raw-frame baselines are the candidates of
each model's added-value row (`job.py`). `bin/evaluate --baselines`,
`EvaluateConfig`'s check and default, the example cache and the report all
read this table: a new baseline is one `Baseline` here.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from m3bert_tf import schema
from m3bert_tf.evaluate import pooling


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline row.

    Attributes:
      name: its row name and `--baselines` value.
      what: what it is, in results.md's legend.
      frames: [T, 324] raw features (float64) -> [T, D] frames, or None.
      from_model: (first model, evaluation context) -> {statistic: [N, D]}
        (`pooling.STATISTICS`), or None; a baseline with it needs `models`.
    """

    name: str
    what: str
    frames: Callable[[np.ndarray], np.ndarray] | None = None
    from_model: Callable | None = None


class Context(NamedTuple):
    """What a `from_model` baseline gets besides the first model."""

    files: list  # the shards, in reading order
    label_sizes: dict  # {task: label width}: part of every cache key
    cache_dir: str
    layer: str  # the probed layer (`EvaluateConfig.layer`)
    batch_size: int
    log: Callable


RANDOM_SEED = 0  # of the random-weight encoder (`models.seeding`); part of its cache key


def _random_encoder(first, context) -> dict:
    """The first model's encoder architecture with random weights,
    at the probed layer (a layer profile's control: its last block)."""
    from m3bert_tf.evaluate import feature_sets

    twin = feature_sets.random_twin(first, RANDOM_SEED)
    layer = "last" if context.layer == "all" else context.layer
    key = feature_sets.digest(
        feature_sets.data_description(context.files, context.label_sizes),
        first.info["encoder"], first.info.get("config"), str(layer), first.window_frames,
        f"seed_weights {RANDOM_SEED}",
    )  # fmt: skip
    arrays = feature_sets.cached(
        context.cache_dir, "random", key,
        lambda: feature_sets.embed_examples(
            twin, context.files, context.label_sizes, twin.check_layer(layer),
            context.batch_size, "random",
        ), context.log,
    )  # fmt: skip
    return pooling.stats_from(arrays, "embedding")


_MFCC = slice(schema.BLOCK["mfcc"].start, schema.BLOCK["mfcc"].stop)

BASELINES: dict[str, Baseline] = {}


def register(baseline: Baseline) -> Baseline:
    """Adds a baseline to the table (a name taken is refused)."""
    if baseline.name in BASELINES:
        raise ValueError(f"baseline {baseline.name!r} is registered already")
    if (baseline.frames is None) == (baseline.from_model is None):
        raise ValueError(f"baseline {baseline.name!r}: give frames or from_model")
    BASELINES[baseline.name] = baseline
    return baseline


register(Baseline("mfcc", "the 20 raw MFCCs", frames=lambda raw: raw[:, _MFCC]))
register(Baseline("features", "the 324 raw input channels", frames=lambda raw: raw))
register(Baseline("random", "first model's encoder, random weights",
                  from_model=_random_encoder))  # fmt: skip


def raw_frames() -> dict:
    """{name: frames} of the baselines computed from input frames, in table
    order (`feature_sets.load_examples` computes and caches their statistics)."""
    return {b.name: b.frames for b in BASELINES.values() if b.frames}
