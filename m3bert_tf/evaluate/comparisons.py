"""What a model adds, and the paired comparisons of a task's rows.

    base = best_raw_baseline(rows)          # "features", chosen on validation
    extra = added_value_sets(sets, base)    # "M2BERT x + features", ...
    paired(rows, resampled)                 # results.json's "comparisons"

A model's row against the best baseline says which is better; it cannot
say whether the model knows anything its input's statistics do not. The
added-value row can: the model's clip embedding joined to the raw-frame
baseline that scored best on validation (so the test split never picks
it), probed like every row and compared, paired on the same resamples, with
that baseline alone. A resolved positive difference is information the
encoder brings beyond its input; the random-weight encoder gets the same
row as the control (a random projection's non-linearity alone).
"""

import numpy as np

from m3bert_tf.evaluate import bootstrap, feature_sets
from m3bert_tf.evaluate.baselines import BASELINES
from m3bert_tf.evaluate.scores import chosen_on_valid, valid_score


def best_raw_baseline(rows: list[dict]) -> str | None:
    """The raw-frame baseline (mfcc, features...) with the best validation
    score: the one each model's added-value row joins (chosen on valid, so
    test never picks it). None when no raw baseline was probed."""
    raw = [
        r["set"] for r in rows
        if r["kind"] == "baseline" and r["set"] in BASELINES and BASELINES[r["set"]].frames
    ]  # fmt: skip
    if not raw:
        return None
    return max(
        dict.fromkeys(raw),
        key=lambda name: valid_score(
            chosen_on_valid([r for r in rows if r["set"] == name])
        ),
    )


def added_value_sources(sets: list) -> list:
    """The sets that get an added-value row: every model and external
    embedding (a layer profile through its mean of the blocks; not the points
    of a learning curve), and the random-weight encoder as its control."""
    return [
        fs for fs in sets
        if fs.x.ndim == 2 and (fs.kind == "model" or fs.name == "random")
        and (not fs.profile or fs.layer == "mean") and not fs.curve
    ]  # fmt: skip


def added_value_sets(sets: list, base: str | None) -> list:
    """Each source's embedding joined to the baseline `base` ([N, D + D_base]):
    compared, paired, with `base` alone, it says what the encoder adds to its
    own input's statistics."""
    if base is None:
        return []
    baseline = next(fs for fs in sets if fs.name == base)
    return [
        feature_sets.FeatureSet(
            f"{fs.name} + {base}", np.concatenate([fs.x, baseline.x], axis=1),
            f"{fs.name} joined to {base}", fs.pooling, kind="added", adds_to=base,
        )
        for fs in added_value_sources(sets)
    ]  # fmt: skip


def paired(rows: list[dict], resampled: list) -> list[dict]:
    """Per probe: every other feature set against the best baseline (by mean
    test score), the other feature sets against each other, and each
    added-value row against the baseline it joins, paired on the task's
    resamples (`bootstrap.compare`)."""
    out = []
    for kind in dict.fromkeys(r["probe"] for r in rows):
        mine = [i for i, r in enumerate(rows) if r["probe"] == kind]
        baselines = [i for i in mine if rows[i]["kind"] == "baseline"]
        others = [i for i in mine if rows[i]["kind"] == "model"]
        # Rows of one layer profile are compared with the baseline, not with
        # each other: the profile's plot shows them side by side; so are the
        # points of one learning curve.
        pairs = [
            (a, b) for n, a in enumerate(others) for b in others[n + 1 :]
            if not _same_group(rows[a], rows[b])
        ]  # fmt: skip
        if baselines:
            best = max(baselines, key=lambda i: rows[i]["mean"]["score"])
            pairs = [(a, best) for a in others] + pairs
        for a in mine:
            if rows[a]["kind"] == "added":
                pairs.append(
                    (a, next(b for b in baselines if rows[b]["set"] == rows[a]["adds_to"]))
                )
        for a, b in pairs:
            result = bootstrap.compare(
                resampled[a], resampled[b], rows[a]["mean"]["score"], rows[b]["mean"]["score"]
            )  # fmt: skip
            out.append({
                "probe": kind, "a": rows[a]["set"], "b": rows[b]["set"],
                "baseline": rows[b]["kind"] == "baseline",
                "added": rows[a]["kind"] == "added", **result,
            })  # fmt: skip
    return out


def _same_group(a: dict, b: dict) -> bool:
    """Two rows of one layer profile or of one learning curve."""
    return any(a.get(key) and a.get(key) == b.get(key) for key in ("profile", "curve"))
