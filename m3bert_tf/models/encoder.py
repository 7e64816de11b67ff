"""The M2BERT encoder: frame features in, contextual frame embeddings out."""

import keras

from m3bert_tf import schema
from m3bert_tf.layers.frame_stack import FrameStack
from m3bert_tf.layers.position import SinusoidalPositionEncoding
from m3bert_tf.layers.transformer import TransformerBlock


@keras.saving.register_keras_serializable(package="m3bert_tf")
class M3BertEncoder(keras.Model):
    """Dense(324k -> H) + sinusoidal positions + LayerNorm + dropout + L blocks.

    Inputs:  {"features": [B, T, 324] float, "padding_mask": [B, T] bool}
    Outputs: {"sequence_output": [B, T / k, H], "padding_mask": [B, T / k] bool}
    with k = frame_stack (T must be a multiple of k).

    Args:
      num_layers: L, transformer blocks.
      hidden_dim: H.
      num_heads: A.
      ffn_dim: FFN inner width.
      max_frames: T the model is built for (None: any length).
      frame_stack: k; 1 = no stacking.
      dropout: dropout rate everywhere.
      num_features: input channels (324).
    """

    def __init__(
        self,
        num_layers,
        hidden_dim,
        num_heads,
        ffn_dim,
        max_frames=None,
        frame_stack=1,
        dropout=0.1,
        num_features=schema.NUM_FEATURES,
        **kwargs,
    ):
        # === Layers ===
        stack = FrameStack(frame_stack, name="frame_stack") if frame_stack > 1 else None
        projection = keras.layers.Dense(hidden_dim, name="input_projection")
        positions = SinusoidalPositionEncoding(name="position_encoding")
        input_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="input_norm")
        input_dropout = keras.layers.Dropout(dropout, name="input_dropout")
        blocks = [
            TransformerBlock(num_heads, ffn_dim, dropout, name=f"transformer_{i}")
            for i in range(num_layers)
        ]

        # === Functional Model ===
        features = keras.Input((max_frames, num_features), name="features")
        padding_mask = keras.Input((max_frames,), dtype="bool", name="padding_mask")
        x, mask = features, padding_mask
        if stack is not None:
            x, mask = stack(x, mask)
        x = input_dropout(input_norm(positions(projection(x))))
        for block in blocks:
            x = block(x, padding_mask=mask)
        super().__init__(
            inputs={"features": features, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "padding_mask": mask},
            **kwargs,
        )

        # === Config ===
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.max_frames = max_frames
        self.frame_stack = frame_stack
        self.dropout = dropout
        self.num_features = num_features

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "max_frames": self.max_frames,
            "frame_stack": self.frame_stack,
            "dropout": self.dropout,
            "num_features": self.num_features,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
