"""Frame stacking: k consecutive frames concatenated into one."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="m3bert_tf")
class FrameStack(keras.layers.Layer):
    """([B, T, C], padding_mask [B, T]) -> ([B, T / k, k C], [B, T / k] bool).

    T must be a multiple of k. A stacked frame is real when any of its k
    frames is.
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs, padding_mask):
        b, t, c = ops.shape(inputs)
        stacked = ops.reshape(inputs, (b, t // self.factor, c * self.factor))
        grouped = ops.reshape(
            ops.cast(padding_mask, "int32"), (b, t // self.factor, self.factor)
        )
        return stacked, ops.max(grouped, axis=-1) > 0

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="m3bert_tf")
class FrameUnstack(keras.layers.Layer):
    """The inverse of FrameStack: [B, T / k, k C] -> [B, T, C]."""

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        b, t, c = ops.shape(inputs)
        return ops.reshape(inputs, (b, t * self.factor, c // self.factor))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
