"""The pre-training model: an encoder plus the heads its objective needs."""

import keras

from m3bert_tf.layers.frame_stack import FrameUnstack
from m3bert_tf.layers.pooling import MaskedMeanPooling
from m3bert_tf.models.encoder import M3BertEncoder, encoder_inputs


@keras.saving.register_keras_serializable(package="m3bert_tf")
class M3BertPretrainer(keras.Model):
    """Predicts, from masked frames, what the objective asks
    (`train/objectives.py`): the clean frames, the tokens of frozen random
    codebooks, or both. Only the encoder is exported; the heads live here.

    Inputs:  the encoder's {"features", "padding_mask"}.
    Outputs: {"reconstruction": [B, T, 324] float32} with `reconstruct`, and
    {"token_logits": [B, ceil(T / k), N, S] float32} with N = token_codebooks
    > 0 codebooks of S = codebook_size codes, and {"clip_projection": [B, P]
    float32} with P = clip_dim > 0 (the clip term's view of the mean over
    real frames); any T.

    Reconstruction head: Dense(H) -> GELU -> LayerNorm -> Dense(324 k) ->
    unstack to [B, T, 324]. Token head: Dense(H) -> GELU -> LayerNorm ->
    Dense(N S). The last layers compute in float32 so the losses are float32
    under mixed precision.

    Args:
      encoder: an `M3BertEncoder` instance (its weights are shared).
      reconstruct: with the reconstruction head.
      token_codebooks, codebook_size: the token head's N and S (0 = none).
      clip_dim: the clip projection head's P (0 = none): mean over real
        frames -> Dense(H) -> GELU -> Dense(P).
    """

    def __init__(self, encoder: M3BertEncoder, reconstruct: bool = True,
                 token_codebooks: int = 0, codebook_size: int = 0, clip_dim: int = 0,
                 **kwargs):  # fmt: skip
        if not reconstruct and not token_codebooks:
            raise ValueError("a pretrainer needs the reconstruction head or a token head")
        k, hidden = encoder.frame_stack, encoder.hidden_dim

        # === Functional Model ===
        inputs = encoder_inputs(encoder)
        encoded = encoder(inputs)
        sequence = encoded["sequence_output"]
        outputs = {}
        if reconstruct:
            x = keras.layers.Dense(hidden, activation="gelu", name="head_dense")(sequence)
            x = keras.layers.LayerNormalization(epsilon=1e-12, name="head_norm")(x)
            x = keras.layers.Dense(
                encoder.num_features * k, name="head_output", dtype="float32"
            )(x)
            if k > 1:
                x = FrameUnstack(k, name="frame_unstack")(x, inputs["features"])
            outputs["reconstruction"] = x
        if token_codebooks:
            x = keras.layers.Dense(hidden, activation="gelu", name="token_dense")(sequence)
            x = keras.layers.LayerNormalization(epsilon=1e-12, name="token_norm")(x)
            x = keras.layers.Dense(
                token_codebooks * codebook_size, name="token_output", dtype="float32"
            )(x)
            x = keras.layers.Reshape(
                (-1, token_codebooks, codebook_size), name="token_logits"
            )(x)
            outputs["token_logits"] = x
        if clip_dim:
            x = MaskedMeanPooling(name="clip_pooling")(sequence, encoded["padding_mask"])
            x = keras.layers.Dense(hidden, activation="gelu", name="clip_dense")(x)
            outputs["clip_projection"] = keras.layers.Dense(
                clip_dim, name="clip_output", dtype="float32"
            )(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.encoder = encoder
        self.reconstruct = reconstruct
        self.token_codebooks = token_codebooks
        self.codebook_size = codebook_size
        self.clip_dim = clip_dim

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "reconstruct": self.reconstruct,
            "token_codebooks": self.token_codebooks,
            "codebook_size": self.codebook_size,
            "clip_dim": self.clip_dim,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
