"""One post-LN transformer encoder block with a padding mask."""

import keras

from m3bert_tf.layers.attention import self_attention


@keras.saving.register_keras_serializable(package="m3bert_tf")
class TransformerBlock(keras.layers.Layer):
    """Self-attention + FFN, each followed by dropout, residual and LayerNorm.

    [B, T, H] (+ padding_mask [B, T] bool, True = real frame) -> [B, T, H].
    Padded positions are never attended to (they are masked as keys); their
    own outputs are computed but meaningless.

    The attention's weights live in a `keras.layers.MultiHeadAttention`
    sublayer (so saved models keep their layout), but the block computes it
    itself (`attention.self_attention`): one fused Q/K/V matmul, scores and weighted sum as
    batched matmuls over [B, A, T, d], the padding mask as an additive bias.
    The layer's own path materialized two transposes of the [B, A, T, T]
    probabilities per block, about 12 % of a training step's op time at
    1294 frames on a CPU (`benchmarks/pretrain_bench.py`'s profile); the
    scores, softmax and dropout are `attention.dot_product_attention`.

    Args:
      num_heads: attention heads; hidden_dim must divide by it.
      ffn_dim: inner width of the feed-forward network (GELU).
      dropout: rate after attention, inside attention and after the FFN.
      layer_norm_epsilon: LayerNorm epsilon.
    """

    def __init__(self, num_heads, ffn_dim, dropout=0.1, layer_norm_epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {hidden_dim} is not divisible by num_heads {self.num_heads}"
            )
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            hidden_dim // self.num_heads,
            dropout=self.dropout,
            name="attention",
        )
        self.attention.build(input_shape, input_shape)
        self.attention_dropout = keras.layers.Dropout(
            self.dropout, name="attention_dropout"
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm"
        )
        self.attention_norm.build(input_shape)
        self.ffn_inner = keras.layers.Dense(
            self.ffn_dim, activation="gelu", name="ffn_inner"
        )
        self.ffn_inner.build(input_shape)
        self.ffn_outer = keras.layers.Dense(hidden_dim, name="ffn_outer")
        self.ffn_outer.build((*input_shape[:-1], self.ffn_dim))
        self.ffn_dropout = keras.layers.Dropout(self.dropout, name="ffn_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="ffn_norm"
        )
        self.ffn_norm.build(input_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, training=None):
        x = self_attention(self.attention, inputs, padding_mask, training)
        x = self.attention_norm(inputs + self.attention_dropout(x, training=training))
        y = self.ffn_outer(self.ffn_inner(x))
        return self.ffn_norm(x + self.ffn_dropout(y, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
