"""Masked mean pooling over time."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="m3bert_tf")
class MaskedMeanPooling(keras.layers.Layer):
    """([B, T, E], padding_mask [B, T] bool) -> [B, E]: the mean over real frames."""

    def call(self, sequence, padding_mask):
        weights = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)
        total = ops.sum(sequence * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)
