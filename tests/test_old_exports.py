"""What users saved with earlier releases and stacks still loads and gives
the same outputs (the release-0.1.0 .keras files: tests/test_models.py).

One SavedModel per TensorFlow line (tests/fixtures/make_savedmodel.py wrote
each with its line's TensorFlow): each line loads both, so a model exported
on one line serves on the other."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import FIXTURES
from tolerances import assert_close_across_kernels

import m3bert_tf

EXPORTED_WITH = ("2.17.1", "2.21.0")


@pytest.mark.parametrize("version", EXPORTED_WITH)
def test_a_savedmodel_exported_on_either_tensorflow_line_loads_and_gives_its_outputs(
    version,
):
    """Loads, serves and gives the same outputs. (Models of the "authors"
    feature set: no front-end signatures, whose constants would make each
    fixture 3.5x larger; the features signatures are what a server runs.)"""
    path = os.path.join(FIXTURES, f"savedmodel_tf{version}")
    want = np.load(os.path.join(FIXTURES, f"savedmodel_tf{version}_outputs.npz"))
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


def test_both_fixtures_hold_the_same_model():
    """The fixtures are one model exported twice: on the same input their
    outputs agree across the lines (so neither line's export drifted)."""
    a, b = (
        tf.saved_model.load(os.path.join(FIXTURES, f"savedmodel_tf{v}"))
        for v in EXPORTED_WITH
    )
    want = np.load(os.path.join(FIXTURES, f"savedmodel_tf{EXPORTED_WITH[0]}_outputs.npz"))
    inputs = {
        "features": tf.constant(want["features"]),
        "lengths": tf.constant(want["lengths"]),
    }
    for key in ("clip_embedding", "clip_enrichment"):
        assert_close_across_kernels(
            a.signatures["embed"](**inputs)[key],
            b.signatures["embed"](**inputs)[key],
            what=key,
        )
