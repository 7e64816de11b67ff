"""Scaled dot-product attention over [B, A, T, d] heads, shaped for a CPU.

Two things here are about speed; the model's outputs stay the same:

- Keys are padded to a multiple of KEY_ALIGNMENT and masked out, so every row
  of the [B, A, T, K] scores starts on a 64-byte boundary: at T = 1294 oneDNN's
  score matmul ran 30 % slower than at 1296 (rows of 5176 bytes), and the
  padded keys get probability exactly 0.
- Dropout on the probabilities draws 16 random bits per element
  (`keep_mask_16bit`) where `keras.random.dropout` draws a 32-bit float: the
  random numbers were most of that dropout's cost (7 % of a training step at
  1294 frames), and the 1 / (1 - rate) scale goes on the [B, A, K, d] values
  rather than the [B, A, T, K] probabilities (one pass fewer each way). The
  masks are other draws than Keras' at a rate rounded to 1/65536.

`benchmarks/pretrain_bench.py` measures the step.
"""

import math

import keras
from keras import ops

KEY_ALIGNMENT = 16  # float32s per 64-byte cache line


def keep_mask_16bit(shape, rate, seed_generator):
    """Bool [..., K] (K even), True with probability 1 - rate, from 16 random
    bits per element (half of one int32 draw). The rate is rounded to a
    multiple of 1/65536: 0.1 -> 0.1000061."""
    half = (*shape[:-1], shape[-1] // 2)
    bits = keras.random.randint(half, -(2**31), 2**31 - 1, "int32", seed=seed_generator)
    return ops.view(bits, "uint16") >= round(rate * 65536)


def dot_product_attention(query, key, value, padding_mask, dropout, training):
    """softmax(Q K^T / sqrt(d) + mask) V with dropout on the probabilities.

    Args:
      query, key, value: [B, A, T, d].
      padding_mask: [B, T] (True = real frame) or None; padded keys get
        probability 0.
      dropout: a keras.layers.Dropout (its rate and seed generator).
      training: whether to apply the dropout.

    Returns:
      [B, A, T, d].
    """
    frames, depth, dtype = ops.shape(key)[2], key.shape[-1], query.dtype
    keys = None if padding_mask is None else ops.cast(padding_mask, "bool")
    pad = -frames % KEY_ALIGNMENT  # a tensor where frames is not static
    if not isinstance(pad, int) or pad:
        widths = [[0, 0], [0, 0], [0, pad], [0, 0]]
        key, value = ops.pad(key, widths), ops.pad(value, widths)
        real = ops.arange(frames + pad) < frames
        keys = (
            ops.expand_dims(real, 0) if keys is None else ops.pad(keys, [[0, 0], [0, pad]])
        )
    query = query * ops.cast(1.0 / math.sqrt(depth), dtype)
    scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))  # [B, A, T, K]
    if keys is not None:
        large = -3e4 if dtype == "float16" else -1e9
        # [B, 1, 1, K] by reshape, not [:, None, None]: new-axis slices are not
        # LiteRT builtins (serving/litert.py converts this graph).
        keys = ops.expand_dims(ops.expand_dims(keys, 1), 1)
        scores = scores + ops.cast(ops.where(keys, 0.0, large), dtype)
    probabilities = ops.softmax(scores, axis=-1)
    if training and dropout.rate > 0:
        if isinstance(probabilities.shape[-1], int):  # K static, so even
            keep = keep_mask_16bit(
                ops.shape(probabilities), dropout.rate, dropout.seed_generator
            )
            probabilities = ops.where(keep, probabilities, ops.cast(0.0, dtype))
            value = value * ops.cast(1.0 / (1.0 - dropout.rate), dtype)
        else:
            probabilities = dropout(probabilities, training=True)
    return ops.matmul(probabilities, value)


def self_attention(mha, x, padding_mask, training):
    """Self-attention with the weights and dropout of `mha` (a built
    `keras.layers.MultiHeadAttention`): [B, T, H] -> [B, T, H], the values of
    `mha(x, x, attention_mask=...)` computed the way this module's docstring
    says (one fused Q/K/V matmul, the heads as [B, A, T, d] batched matmuls).

    Args:
      mha: the layer holding the Q, K, V and output projections.
      x: [B, T, H].
      padding_mask: [B, T] (True = real frame) or None.
      training: whether dropout applies.
    """
    hidden = x.shape[-1]
    heads, depth = mha.num_heads, hidden // mha.num_heads
    batch, frames = ops.shape(x)[0], ops.shape(x)[1]
    dense = (mha.query_dense, mha.key_dense, mha.value_dense)
    kernel = ops.concatenate(
        [ops.reshape(ops.cast(d.kernel, x.dtype), (hidden, hidden)) for d in dense],
        axis=1,
    )
    bias = ops.concatenate(
        [ops.reshape(ops.cast(d.bias, x.dtype), (hidden,)) for d in dense]
    )
    qkv = ops.matmul(x, kernel) + bias  # [B, T, 3H]

    def heads_first(y):  # [B, T, H] -> [B, A, T, d]
        return ops.transpose(ops.reshape(y, (batch, frames, heads, depth)), (0, 2, 1, 3))

    query, key, value = (heads_first(y) for y in ops.split(qkv, 3, axis=-1))
    with keras.name_scope("attention_core"):  # what the profile calls attention
        context = dot_product_attention(
            query, key, value, padding_mask, mha._dropout_layer, training
        )  # [B, A, T, d]
    context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, frames, hidden))
    output = mha.output_dense
    kernel = ops.reshape(ops.cast(output.kernel, x.dtype), (hidden, hidden))
    return ops.matmul(context, kernel) + ops.cast(output.bias, x.dtype)
