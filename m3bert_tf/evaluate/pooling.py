"""Pooling of frames into clip embeddings, the same for every feature set.

    stats = frame_statistics(frames)              # {"mean", "std", "max"}: [D] each
    x = pool({k: [N, D] ...}, "mean+std")         # [N, 2D]

A clip embedding is a statistic of its frames over time. Judging an encoder
against statistics of its own input channels is fair only when both are
pooled alike: the mean of 64 model dimensions against the mean and std of
324 input channels hands the baseline a second view of every channel (how
much it moves) that the model row never gets. So every feature set with
frames (model blocks, raw input channels, a user's frame-level embeddings)
is reduced to the same three statistics per dimension over the example's
real frames, stored once, and `POOLINGS` picks which are concatenated.
The statistics are exact over the whole example however it was windowed:
sums, sums of squares and maxima add up across windows (`Accumulator`).
"""

import numpy as np

STATISTICS = ("mean", "std", "max")
# --pooling: the statistics concatenated, in this order. mean+std is the
# default for every set (the raw baselines' pooling since the first release);
# "mean" is the paper's pooling of model frames.
POOLINGS = {
    "mean": ("mean",),
    "mean+std": ("mean", "std"),
    "mean+std+max": ("mean", "std", "max"),
}
DEFAULT_POOLING = "mean+std"


def frame_statistics(frames: np.ndarray) -> dict:
    """{"mean", "std", "max"}: [..., D] float32 over the frames axis 0 of
    `frames` [T, ..., D] (the population std, as numpy's default)."""
    frames = np.asarray(frames, np.float64)
    return {
        "mean": frames.mean(0).astype(np.float32),
        "std": frames.std(0).astype(np.float32),
        "max": frames.max(0).astype(np.float32),
    }


class Accumulator:
    """Statistics of each owner's frames gathered window by window.

    `add(owner, frames)` takes [t, ..., D] frames of one window, in any order
    of owners and windows; `result()` gives {stat: [owners, ..., D] float32},
    equal to `frame_statistics` of each owner's frames concatenated.
    """

    def __init__(self):
        self._sum, self._squares, self._max, self._count = {}, {}, {}, {}

    def add(self, owner, frames: np.ndarray) -> None:
        frames = np.asarray(frames, np.float64)
        if not len(frames):
            return
        if owner not in self._sum:
            self._sum[owner] = np.zeros(frames.shape[1:])
            self._squares[owner] = np.zeros(frames.shape[1:])
            self._max[owner] = np.full(frames.shape[1:], -np.inf)
            self._count[owner] = 0
        self._sum[owner] += frames.sum(0)
        self._squares[owner] += np.square(frames).sum(0)
        np.maximum(self._max[owner], frames.max(0), out=self._max[owner])
        self._count[owner] += len(frames)

    def owners(self) -> list:
        return list(self._sum)

    def result(self, owners=None) -> dict:
        """{stat: [owners, ..., D]} in the order of `owners` (default: as first seen)."""
        owners = self.owners() if owners is None else list(owners)
        if not owners:
            return {k: np.zeros((0,), np.float32) for k in STATISTICS}
        counts = np.array([self._count[o] for o in owners], np.float64)
        counts = counts.reshape((-1,) + (1,) * self._sum[owners[0]].ndim)
        mean = np.stack([self._sum[o] for o in owners]) / counts
        # E[x²] - E[x]², clipped at 0: rounding can leave -1e-17 where the
        # frames are constant.
        var = np.maximum(np.stack([self._squares[o] for o in owners]) / counts - mean**2, 0)
        return {
            "mean": mean.astype(np.float32),
            "std": np.sqrt(var).astype(np.float32),
            "max": np.stack([self._max[o] for o in owners]).astype(np.float32),
        }


def pool(stats: dict, pooling: str) -> np.ndarray:
    """The statistics `POOLINGS[pooling]` names, concatenated on the last axis:
    [N, ..., D] each -> [N, ..., kD] float32.

    Raises:
      ValueError: an unknown pooling, or statistics missing from `stats`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: use one of {tuple(POOLINGS)}, got {pooling!r}")
    missing = [k for k in POOLINGS[pooling] if k not in stats]
    if missing:
        raise ValueError(f"pooling {pooling}: no {', '.join(missing)} statistics")
    return np.concatenate([stats[k] for k in POOLINGS[pooling]], axis=-1).astype(np.float32)


def stats_arrays(prefix: str, stats: dict) -> dict:
    """{f"{prefix}_{stat}": array} for a cache file."""
    return {f"{prefix}_{k}": v for k, v in stats.items()}


def stats_from(arrays: dict, prefix: str) -> dict:
    """The statistics `stats_arrays(prefix, ...)` stored, from a cache file's arrays."""
    return {k: arrays[f"{prefix}_{k}"] for k in STATISTICS if f"{prefix}_{k}" in arrays}
