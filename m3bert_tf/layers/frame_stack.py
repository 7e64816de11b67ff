"""Frame stacking: k consecutive frames concatenated into one."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="m3bert_tf")
class FrameStack(keras.layers.Layer):
    """([B, T, C], padding_mask [B, T]) -> ([B, ceil(T / k), k C], [B, ceil(T / k)] bool).

    Any T: the sequence is zero-padded (as padding) to a multiple of k first. A
    stacked frame is real when any of its k frames is.
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs, padding_mask):
        b, t, c = ops.shape(inputs)
        extra = (self.factor - t % self.factor) % self.factor
        inputs = ops.pad(inputs, [[0, 0], [0, extra], [0, 0]])
        mask = ops.pad(ops.cast(padding_mask, "int32"), [[0, 0], [0, extra]])
        stacked_frames = (t + extra) // self.factor
        stacked = ops.reshape(inputs, (b, stacked_frames, c * self.factor))
        grouped = ops.reshape(mask, (b, stacked_frames, self.factor))
        return stacked, ops.max(grouped, axis=-1) > 0

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        b, t, c = inputs_shape
        frames = None if t is None else -(-t // self.factor)
        return (b, frames, c * self.factor), (b, frames)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="m3bert_tf")
class FrameUnstack(keras.layers.Layer):
    """The inverse of FrameStack: [B, T', k C] -> [B, T' k, C].

    Given `like` ([B, T, ...], the stacked input), the result is cut back to
    its T frames (FrameStack padded T up to a multiple of k).
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs, like=None):
        b, t, c = ops.shape(inputs)
        out = ops.reshape(inputs, (b, t * self.factor, c // self.factor))
        if like is not None:
            out = ops.slice(out, [0, 0, 0], [b, ops.shape(like)[1], c // self.factor])
        return out

    def compute_output_shape(self, inputs_shape, like_shape=None):
        b, t, c = inputs_shape
        if like_shape is not None:
            frames = like_shape[1]
        else:
            frames = None if t is None else t * self.factor
        return (b, frames, c // self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
