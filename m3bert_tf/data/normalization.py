"""How stored features are normalized before a model sees them.

Records hold per-track CMVN'd features plus the track's per-channel mean and
standard deviation of the raw features (`schema.TRACK_MEAN_KEY`,
`TRACK_STD_KEY`), so every mode can be had from the same shards:

- "track": as stored, each channel zero mean and unit variance over the
  track (the paper's; a track's levels, e.g. loudness or a static timbre,
  are gone);
- "global": raw features with one mean/std over the training data (from
  the manifests' statistics), so track-level differences survive;
- "none": the raw features.

A new mode is a branch of `model_inputs` and a name in MODES: the input
pipelines, the example cache, the TensorFlow front end, the Python API and
the flags all go through them. Everything here is numpy arithmetic that
TensorFlow tensors take too (no TensorFlow import). Statistics are plain
dicts {"frames": n, "mean": [324], "std": [324]} (the shape `manifest.json`
stores them in).
"""

import numpy as np

from m3bert_tf import schema

MODES = ("track", "global", "none")
MIN_STD = 1e-5  # as frames.CMVN_MIN_STD: flatter channels are not scaled up


def sums_of(num_frames: int, mean: np.ndarray, std: np.ndarray) -> dict:
    """One track's contribution: {"frames", "sum", "sum_sq"} (float64 lists)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return {
        "frames": int(num_frames),
        "sum": (num_frames * mean).tolist(),
        "sum_sq": (num_frames * (std**2 + mean**2)).tolist(),
    }


def add_sums(a: dict | None, b: dict) -> dict:
    if a is None:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in b.items()}
    return {
        "frames": a["frames"] + b["frames"],
        "sum": (np.asarray(a["sum"]) + np.asarray(b["sum"])).tolist(),
        "sum_sq": (np.asarray(a["sum_sq"]) + np.asarray(b["sum_sq"])).tolist(),
    }


def stats_from_sums(sums: dict) -> dict:
    """{"frames", "sum", "sum_sq"} -> {"frames", "mean", "std"}."""
    n = max(sums["frames"], 1)
    mean = np.asarray(sums["sum"]) / n
    var = np.maximum(np.asarray(sums["sum_sq"]) / n - mean**2, 0.0)
    return {"frames": sums["frames"], "mean": mean.tolist(), "std": np.sqrt(var).tolist()}


def combine_stats(parts: list[dict]) -> dict:
    """Frame-weighted union of several {"frames", "mean", "std"} (several shard dirs)."""
    total = None
    for p in parts:
        total = add_sums(total, sums_of(p["frames"], p["mean"], p["std"]))
    if total is None:
        raise ValueError("no statistics to combine")
    return stats_from_sums(total)


def raw_features(stored, track_mean, track_std):
    """The raw features back from stored ones: stored x track std + track mean.

    Args:
      stored: [T, 324] per-track CMVN'd features (numpy or TensorFlow).
      track_mean, track_std: [324], the track's raw statistics.
    """
    return stored * track_std[None, :] + track_mean[None, :]


def model_inputs(mode: str, raw, stored=None, scale=None):
    """What a model trained with `mode` sees: the one switch over MODES, used
    by the input pipelines, the example cache, the TensorFlow front end and
    the Python API (numpy or TensorFlow values alike).

    Args:
      mode: one of MODES.
      raw: "global" and "none": [T, 324] raw features.
      stored: "track": the per-track CMVN'd features (as extraction stores
        them).
      scale: "global": `global_scale(stats)`.
      Either of `raw` and `stored` may be a function of no arguments that
      computes it: only the one `mode` needs is computed (the pipelines'
      hot path never denormalizes for "track").
    """
    if mode == "track":
        if stored is None:
            raise ValueError("normalization 'track' needs the per-track CMVN'd features")
        return stored() if callable(stored) else stored
    raw = raw() if callable(raw) else raw
    if mode == "none":
        return raw
    if mode != "global":
        raise ValueError(f"normalization must be one of {MODES}, got {mode!r}")
    if scale is None:
        raise ValueError("normalization 'global' needs statistics (from the manifests)")
    mean, std = scale
    return (raw - mean[None, :]) / std[None, :]


def normalize(features, track_mean, track_std, mode: str, stats: dict | None = None):
    """Stored features [T, 324] (per-track CMVN) -> the features of `mode`
    (`model_inputs`).

    Args:
      features: [T, 324] float32 as stored.
      track_mean, track_std: [324] float32, the track's raw statistics.
      mode: one of MODES.
      stats: the global statistics ("global" only).
    """
    scale = global_scale(stats) if stats is not None else None
    return model_inputs(
        mode, lambda: raw_features(features, track_mean, track_std), features, scale
    )


def global_scale(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """ "global" mode's ([324] mean, [324] std floored at MIN_STD), float32: raw
    features x become (x - mean) / std, in the pipelines (`normalize`) and
    wherever a trained model is fed (`serving.api`)."""
    mean = np.asarray(stats["mean"], np.float32).reshape(schema.NUM_FEATURES)
    std = np.maximum(np.asarray(stats["std"], np.float32), MIN_STD).reshape(
        schema.NUM_FEATURES
    )
    return mean, std
