"""Sinusoidal position encoding (Vaswani et al. 2017)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="m3bert_tf")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Adds fixed sin/cos position encodings: [B, T, H] -> [B, T, H].

    Args:
      max_wavelength: the longest wavelength, in positions (10000 as in the
        Transformer).
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, inputs):
        length, hidden = ops.shape(inputs)[1], ops.shape(inputs)[2]
        positions = ops.expand_dims(ops.cast(ops.arange(length), "float32"), -1)
        dims = ops.cast(ops.arange(hidden), "float32")
        # Pairs of channels share a frequency: sin on even, cos on odd.
        rates = ops.power(
            self.max_wavelength, -2.0 * ops.floor(dims / 2.0) / ops.cast(hidden, "float32")
        )
        angles = positions * ops.expand_dims(rates, 0)
        even = ops.equal(ops.mod(ops.arange(hidden), 2), 0)
        encoding = ops.where(ops.expand_dims(even, 0), ops.sin(angles), ops.cos(angles))
        return inputs + ops.expand_dims(ops.cast(encoding, inputs.dtype), 0)

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
