"""The layer profile (`bin/evaluate --layer=all`): which block to use.

An encoder's clip embeddings of every block, [N, L, H], become L + 2 feature
sets of one profile: each block alone ("L0" ... "L<L-1>"), their mean
("mean"), and their learned softmax-weighted sum ("weighted": SUPERB's layer
weighting, the weights trained with each probe; `probe._Stack`). Every row
is probed and scored like any other; `report.plot_layers` draws the profile
(score and interval per layer) with the weighted rows' learned weights.
"""

from m3bert_tf.evaluate.feature_sets import FeatureSet


def encoder_sets(name: str, x, what: str, pooling: str) -> list[FeatureSet]:
    """[FeatureSet(name, x)] for one layer's pooled [N, D]; the profile's L + 2
    sets for every block's [N, L, D] (each block pooled alike, `pooling`)."""
    if x.ndim == 2:
        return [FeatureSet(name, x, what, pooling)]
    profile = [
        FeatureSet(f"{name} L{i}", x[:, i], f"block {i}", pooling, name, f"L{i}")
        for i in range(x.shape[1])
    ]
    profile.append(
        FeatureSet(f"{name} mean", x.mean(1), "mean of the blocks", pooling, name, "mean")
    )
    profile.append(
        FeatureSet(
            f"{name} weighted", x, "softmax-weighted sum of the blocks, weights learned "
            "with the probe", pooling, name, "weighted",
        )
    )  # fmt: skip
    return profile
