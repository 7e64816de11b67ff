"""What users saved with earlier releases and stacks still loads and gives
the same outputs (the release-0.1.0 .keras files: tests/test_models.py)."""

import numpy as np
import tensorflow as tf


def test_a_savedmodel_exported_with_tensorflow_2_17_loads_and_gives_its_outputs():
    """Committed before the move to a newer TensorFlow: what a user exported
    then still loads, serves and gives the same outputs. (A model of the
    "authors" feature set: no front-end signatures, whose constants would make
    the fixture 3.5x larger; the features signatures are what a server runs.)"""
    import os

    from conftest import FIXTURES
    from tolerances import assert_close_across_kernels

    import m3bert_tf

    path = os.path.join(FIXTURES, "savedmodel_tf2.17.1")
    want = np.load(os.path.join(FIXTURES, "savedmodel_tf2.17.1_outputs.npz"))
    loaded = tf.saved_model.load(path)
    inputs = {
        "features": tf.constant(want["features"]),
        "lengths": tf.constant(want["lengths"]),
    }
    embedded = loaded.signatures["embed"](**inputs)
    for key in ("clip_embedding", "clip_enrichment"):
        assert_close_across_kernels(embedded[key], want[key], what=key)
    assert_close_across_kernels(
        loaded.signatures["predict"](**inputs)["genre"], want["genre"]
    )
    model = m3bert_tf.load(path)  # its feature set has no TF front end: librosa's
    features = want["features"][1, : want["lengths"][1]]
    (out,) = model.run_windows([features], "embed")
    assert_close_across_kernels(out["clip_enrichment"], want["clip_enrichment"][1])
