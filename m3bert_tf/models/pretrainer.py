"""The pre-training model: an encoder plus the reconstruction head."""

import keras

from m3bert_tf.layers.frame_stack import FrameUnstack
from m3bert_tf.models.encoder import M3BertEncoder, encoder_inputs


@keras.saving.register_keras_serializable(package="m3bert_tf")
class M3BertPretrainer(keras.Model):
    """Reconstructs the clean frames from masked ones.

    Inputs:  the encoder's {"features", "padding_mask"}.
    Outputs: {"reconstruction": [B, T, 324] float32}, any T.

    Head: Dense(H) -> GELU -> LayerNorm -> Dense(324 k) -> unstack to [B, T, 324].
    The last layer computes in float32 so the loss is float32 under mixed
    precision.

    Args:
      encoder: an `M3BertEncoder` instance (its weights are shared).
    """

    def __init__(self, encoder: M3BertEncoder, **kwargs):
        # === Layers ===
        k = encoder.frame_stack
        head_dense = keras.layers.Dense(
            encoder.hidden_dim, activation="gelu", name="head_dense"
        )
        head_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="head_norm")
        head_output = keras.layers.Dense(
            encoder.num_features * k, name="head_output", dtype="float32"
        )
        unstack = FrameUnstack(k, name="frame_unstack") if k > 1 else None

        # === Functional Model ===
        inputs = encoder_inputs(encoder)
        x = encoder(inputs)["sequence_output"]
        x = head_output(head_norm(head_dense(x)))
        if unstack is not None:
            x = unstack(x, inputs["features"])
        super().__init__(inputs=inputs, outputs={"reconstruction": x}, **kwargs)

        # === Config ===
        self.encoder = encoder

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
