"""Cross-validation for small labeled sets: K folds grouped by track.

    splits = partitions(examples, task, spec, k=5)   # one [N] split array per fold

A task's labeled examples of every split are pooled; its tracks are dealt
into K folds (each track, so every chunk of it, in exactly one fold;
stratified by class for a classification task: each class's tracks are
shuffled with the seed and dealt round-robin, continuing from fold to fold,
so every fold holds each class as far as its count allows). Fold f is the
test split of partition f, fold f + 1 (mod K) its validation split, the rest
its training split. Every track is tested once, so the folds' test
predictions pool into one out-of-fold prediction per track, which the
intervals resample (`bootstrap`).
"""

import numpy as np


def assign(
    track_ids: list[str], classes: dict[str, int] | None, k: int, seed: int = 0
) -> dict:
    """{track id: fold in [0, k)}; `classes` ({track id: class}) stratifies."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = {}
    for track in sorted(set(track_ids)):
        groups.setdefault(classes.get(track, 0) if classes else 0, []).append(track)
    fold_of, position = {}, 0
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        for track in members:
            fold_of[track] = position % k
            position += 1
    return fold_of


def partitions(examples, task: str, spec, k: int, seed: int = 0) -> list[np.ndarray]:
    """[N] arrays of "train" / "valid" / "test" ("" for examples not labeled
    for `task`), one per fold: fold f tests, fold f + 1 validates.

    Raises:
      ValueError: fewer tracks labeled for the task than folds.
    """
    labeled = np.flatnonzero(examples.has[task])
    tracks = examples.track_ids[labeled]
    if len(set(tracks)) < k:
        raise ValueError(
            f"task {task}: {len(set(tracks))} labeled tracks cannot fill {k} folds"
        )
    classes = None
    if spec.kind == "classification":
        classes = {
            t: int(y[0])
            for t, y in zip(tracks, examples.labels[task][labeled], strict=True)
        }
    fold_of = assign(list(tracks), classes, k, seed)
    folds = np.array([fold_of[t] for t in tracks])
    out = []
    for f in range(k):
        splits = np.full(len(examples.track_ids), "", dtype=object)
        splits[labeled] = np.where(
            folds == f, "test", np.where(folds == (f + 1) % k, "valid", "train")
        )
        out.append(splits.astype(str))
    return out
