"""One Conformer block (Gulati et al. 2020) with a padding mask.

The block MusicFM found better than a plain transformer block for music
(its ablation: chord and structure tasks): attention sees the whole clip, a
depthwise convolution over time sees a short neighbourhood of each frame.
"""

import keras
from keras import ops

from m3bert_tf.layers.attention import self_attention


@keras.saving.register_keras_serializable(package="m3bert_tf")
class ConformerBlock(keras.layers.Layer):
    """Half FFN, self-attention, convolution module, half FFN, LayerNorm.

    [B, T, H] (+ padding_mask [B, T] bool, True = real frame) -> [B, T, H].

        x = x + FFN_1(x) / 2
        x = x + Dropout(Attention(LN(x)))
        x = x + Conv(x)
        x = LN(x + FFN_2(x) / 2)

    FFN_i = Dropout(Dense_H(Dropout(Dense_F(LN(x), swish)))); Conv = Dropout(
    Dense_H(swish(LN(DepthwiseConv_k(GLU(Dense_2H(LN(x)))))))). Two departures
    from the paper, both for padding: the convolution module normalizes with
    LayerNorm where the paper has BatchNorm (batch statistics would mix padded
    frames, and a served batch of one differs from a training batch), and its
    input is zeroed at padded frames before the depthwise convolution, so a
    real frame's output never depends on what sits in the padding (padded
    keys are masked in the attention as in `TransformerBlock`). Padded
    positions' own outputs are computed but meaningless.

    Args:
      num_heads: attention heads; hidden_dim must divide by it.
      ffn_dim: inner width of each of the two feed-forward networks.
      conv_kernel: frames the depthwise convolution spans (odd; 31 = 0.72 s
        at 43 frames/s).
      dropout: rate after each module and inside attention and the FFNs.
      layer_norm_epsilon: LayerNorm epsilon.
    """

    def __init__(
        self,
        num_heads,
        ffn_dim,
        conv_kernel=31,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and positive, got {conv_kernel}")
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.conv_kernel = conv_kernel
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    def _norm(self, name, shape):
        norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name=name)
        norm.build(shape)
        return norm

    def _dense(self, name, units, shape, activation=None):
        dense = keras.layers.Dense(units, activation=activation, name=name)
        dense.build(shape)
        return dense

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim {hidden_dim} is not divisible by num_heads {self.num_heads}"
            )
        inner = (*input_shape[:-1], self.ffn_dim)
        for i in (1, 2):  # attributes, not a list: the weights keep their names
            setattr(self, f"ffn{i}_norm", self._norm(f"ffn{i}_norm", input_shape))
            setattr(
                self,
                f"ffn{i}_inner",
                self._dense(f"ffn{i}_inner", self.ffn_dim, input_shape, "silu"),
            )
            setattr(self, f"ffn{i}_outer", self._dense(f"ffn{i}_outer", hidden_dim, inner))
        self.attention_norm = self._norm("attention_norm", input_shape)
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            hidden_dim // self.num_heads,
            dropout=self.dropout,
            name="attention",
        )
        self.attention.build(input_shape, input_shape)
        self.conv_norm = self._norm("conv_norm", input_shape)
        self.conv_expand = self._dense("conv_expand", 2 * hidden_dim, input_shape)
        self.depthwise = keras.layers.DepthwiseConv1D(
            self.conv_kernel, padding="same", name="depthwise"
        )
        self.depthwise.build(input_shape)
        self.depthwise_norm = self._norm("depthwise_norm", input_shape)
        self.conv_project = self._dense("conv_project", hidden_dim, input_shape)
        self.output_norm = self._norm("output_norm", input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout")
        self.built = True

    def _ffn(self, index, x, training):
        """FFN_index (1 or 2): [B, T, H] -> [B, T, H]."""
        norm, inner, outer = (
            getattr(self, f"ffn{index}_{part}") for part in ("norm", "inner", "outer")
        )
        y = self.dropout_layer(inner(norm(x)), training=training)
        return self.dropout_layer(outer(y), training=training)

    def _convolve(self, x, padding_mask, training):
        """The convolution module: [B, T, H] -> [B, T, H]."""
        value, gate = ops.split(self.conv_expand(self.conv_norm(x)), 2, axis=-1)
        y = value * ops.sigmoid(gate)  # GLU
        if padding_mask is not None:  # padded frames must not reach real ones
            y = y * ops.expand_dims(ops.cast(padding_mask, y.dtype), -1)
        y = ops.silu(self.depthwise_norm(self.depthwise(y)))
        return self.dropout_layer(self.conv_project(y), training=training)

    def call(self, inputs, padding_mask=None, training=None):
        half = ops.cast(0.5, inputs.dtype)
        x = inputs + half * self._ffn(1, inputs, training)
        y = self_attention(self.attention, self.attention_norm(x), padding_mask, training)
        x = x + self.dropout_layer(y, training=training)
        x = x + self._convolve(x, padding_mask, training)
        return self.output_norm(x + half * self._ffn(2, x, training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "conv_kernel": self.conv_kernel,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
