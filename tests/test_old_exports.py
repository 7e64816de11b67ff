"""What users saved with earlier releases and stacks still loads and gives
the same outputs (the release-0.1.0 .keras files: tests/test_models.py)."""

import numpy as np
import tensorflow as tf


def test_a_savedmodel_exported_with_tensorflow_2_17_loads_and_gives_its_outputs():
    """Committed before the move to a newer TensorFlow: what a user exported
    then still loads, serves and gives the same outputs (checked inputs too)."""
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
    waveform = loaded.signatures["embed_waveform"](
        waveform=tf.constant(want["waveform"]),
        lengths=tf.constant([want["waveform"].shape[1]]),
    )
    assert_close_across_kernels(waveform["clip_embedding"], want["waveform_clip_embedding"])
    model = m3bert_tf.load(path)
    assert sorted(model.predict(want["waveform"][0], 44100)["genre"]) == ["a", "b", "c"]
