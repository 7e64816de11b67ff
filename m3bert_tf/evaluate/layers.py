"""The layer profile (`bin/evaluate --layer=all`): which block to use.

An encoder's clip embeddings of every block, [N, L, H], become L + 2 feature
sets of one profile: each block alone ("L0" ... "L<L-1>"), their mean
("mean"), and their learned softmax-weighted sum ("weighted": SUPERB's layer
weighting, the weights trained with each probe; `probe._Stack`). Every row
is probed and scored like any other; `report.plot_layers` draws the profile
(score and interval per layer) with the weighted rows' learned weights.
"""

from m3bert_tf.evaluate.feature_sets import FeatureSet


def encoder_sets(name: str, x, what: str) -> list[FeatureSet]:
    """[FeatureSet(name, x)] for one layer's [N, H]; the profile's L + 2 sets
    for every block's [N, L, H]."""
    if x.ndim == 2:
        return [FeatureSet(name, x, what)]
    profile = [
        FeatureSet(f"{name} L{i}", x[:, i], f"block {i}", profile=name, layer=f"L{i}")
        for i in range(x.shape[1])
    ]
    profile.append(
        FeatureSet(
            f"{name} mean", x.mean(1), "mean of the blocks", profile=name, layer="mean"
        )
    )
    profile.append(
        FeatureSet(
            f"{name} weighted", x, "softmax-weighted sum of the blocks, weights learned "
            "with the probe", profile=name, layer="weighted",
        )
    )  # fmt: skip
    return profile
