"""The M2BERT encoder: frame features in, contextual frame embeddings out."""

import keras

from m3bert_tf import schema
from m3bert_tf.layers.conformer import ConformerBlock
from m3bert_tf.layers.frame_stack import FrameStack
from m3bert_tf.layers.position import SinusoidalPositionEncoding
from m3bert_tf.layers.transformer import TransformerBlock

BLOCKS = ("transformer", "conformer")


@keras.saving.register_keras_serializable(package="m3bert_tf")
class M3BertEncoder(keras.Model):
    """Dense(324k -> H) + sinusoidal positions + LayerNorm + dropout + L blocks.

    Inputs:  {"features": [B, T, 324] float, "padding_mask": [B, T] bool}
    Outputs: {"sequence_output": [B, ceil(T / k), H],
              "padding_mask": [B, ceil(T / k)] bool}
    with k = frame_stack. T is any length (`None` in the saved model: the
    positions are sinusoidal); a crop length belongs to the data pipeline.

    Attributes:
      blocks: the L blocks (`TransformerBlock`s or `ConformerBlock`s), bottom
        first (what fine-tuning freezes or unfreezes).

    Args:
      num_layers: L, transformer blocks.
      hidden_dim: H.
      num_heads: A.
      ffn_dim: FFN inner width.
      frame_stack: k; 1 = no stacking.
      dropout: dropout rate everywhere.
      num_features: input channels (324).
      block: "transformer" (the paper's post-LN block, `transformer_i`) or
        "conformer" (`ConformerBlock`, `conformer_i`).
      conv_kernel: the Conformer's depthwise convolution width, in tokens.
    """

    def __init__(
        self,
        num_layers,
        hidden_dim,
        num_heads,
        ffn_dim,
        frame_stack=1,
        dropout=0.1,
        num_features=schema.NUM_FEATURES,
        block="transformer",
        conv_kernel=31,
        **kwargs,
    ):
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        # === Layers ===
        stack = FrameStack(frame_stack, name="frame_stack") if frame_stack > 1 else None
        projection = keras.layers.Dense(hidden_dim, name="input_projection")
        positions = SinusoidalPositionEncoding(name="position_encoding")
        input_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="input_norm")
        input_dropout = keras.layers.Dropout(dropout, name="input_dropout")
        if block == "conformer":
            blocks = [
                ConformerBlock(
                    num_heads, ffn_dim, conv_kernel, dropout, name=f"conformer_{i}"
                )
                for i in range(num_layers)
            ]
        else:
            blocks = [
                TransformerBlock(num_heads, ffn_dim, dropout, name=f"transformer_{i}")
                for i in range(num_layers)
            ]

        # === Functional Model ===
        features = keras.Input((None, num_features), name="features")
        padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
        x, mask = features, padding_mask
        if stack is not None:
            x, mask = stack(x, mask)
        x = input_dropout(input_norm(positions(projection(x))))
        for layer in blocks:
            x = layer(x, padding_mask=mask)
        super().__init__(
            inputs={"features": features, "padding_mask": padding_mask},
            outputs={"sequence_output": x, "padding_mask": mask},
            **kwargs,
        )

        # === Config ===
        self.blocks = blocks
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.frame_stack = frame_stack
        self.dropout = dropout
        self.num_features = num_features
        self.block = block
        self.conv_kernel = conv_kernel

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "frame_stack": self.frame_stack,
            "dropout": self.dropout,
            "num_features": self.num_features,
            "block": self.block,
            "conv_kernel": self.conv_kernel,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Release 0.1.0 saved a fixed input length; every length works now.
        config.pop("max_frames", None)
        return cls(**config)


def encoder_inputs(encoder: M3BertEncoder) -> dict:
    """Fresh `keras.Input`s matching the encoder's: any batch, any length."""
    return {
        "features": keras.Input((None, encoder.num_features), name="features"),
        "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
    }
