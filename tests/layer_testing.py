"""One test base for every layer and model: run eagerly, config round trip,
`.keras` save and reload, one training step (keras-hub's `run_layer_test`, ours).

    check_layer(lambda: MaskedMeanPooling(), [sequence, mask], tmp_path)
"""

import keras
import numpy as np
import tensorflow as tf


def _outputs(value) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [np.asarray(value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def _call(layer, inputs):
    return layer(inputs) if isinstance(inputs, dict) else layer(*inputs)


def _functional(layer, inputs):
    """A functional model around a layer, so that it can go through `.keras`."""
    if isinstance(inputs, dict):
        return layer
    symbolic = [keras.Input(x.shape[1:], dtype=str(x.dtype)) for x in inputs]
    return keras.Model(symbolic, _call(layer, symbolic))


def check_layer(make, inputs, tmp_path, atol=1e-5):
    """Asserts the contract every layer and model of the project keeps.

    Args:
      make: () -> a fresh, unbuilt layer or model.
      inputs: a list of arrays passed positionally, or the dict a model takes.
    """
    layer = make()
    out = _outputs(_call(layer, inputs))

    # The constructor arguments are the config: a clone computes the same.
    clone = layer.__class__.from_config(layer.get_config())
    _call(clone, inputs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(_outputs(_call(clone, inputs)), out, strict=True):
        np.testing.assert_allclose(a, b, atol=atol)
    assert clone.get_config() == layer.get_config()

    # Saved and reloaded from .keras: same outputs.
    model = _functional(layer, inputs)
    path = str(tmp_path / f"{layer.name}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    result = reloaded(inputs if isinstance(inputs, dict) else list(inputs))
    for a, b in zip(_outputs(result), out, strict=True):
        np.testing.assert_allclose(a, b, atol=atol)

    # One training step moves every trainable weight that the loss reaches.
    variables = layer.trainable_variables
    if variables:
        before = [v.numpy().copy() for v in variables]
        with tf.GradientTape() as tape:
            result = _call(layer, inputs)
            loss = sum(
                tf.reduce_mean(tf.square(tf.cast(v, tf.float32)))
                for v in tf.nest.flatten(result)
                if v.dtype.is_floating
            )
        grads = tape.gradient(loss, variables)
        keras.optimizers.SGD(0.1).apply_gradients(zip(grads, variables, strict=True))
        moved = [
            not np.allclose(b, v.numpy()) for b, v in zip(before, variables, strict=True)
        ]
        assert any(moved), f"{layer.name}: no weight moved in a training step"
        assert np.isfinite(float(loss))
    return out
