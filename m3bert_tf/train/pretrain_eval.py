"""What a pretraining evaluation writes: its TensorBoard scalars and images,
and its progress line."""

import tensorflow as tf


def eval_line(result: dict) -> str:
    """One line of held-out scores (`objectives.Objective.eval_results`)."""
    parts = []
    if "loss_total" in result:
        parts.append(
            f"masked Huber {result['loss_total']:.4f}, predict-zero "
            f"{result['zero_loss_total']:.4f} (ratio {result['loss_vs_zero']:.3f})"
        )
    if "token_ce" in result:
        parts.append(
            f"token cross-entropy {result['token_ce']:.3f} ({result['token_ce_vs_uniform']:.3f} "
            f"of guessing), accuracy {result['token_accuracy']:.3f}, codebook usage entropy "
            f"{result['codebook_entropy']:.2f}"
        )
    if "clip_ce" in result:
        parts.append(
            f"clip term {result['clip_ce']:.3f}, partner found {result['clip_accuracy']:.3f}"
        )
    return "; ".join(parts)


def _image(x):
    """[T, 324] -> [1, 324, T, 1] in [0, 1], low channels at the bottom."""
    x = tf.transpose(tf.cast(x, tf.float32))[::-1]
    lo, hi = tf.reduce_min(x), tf.reduce_max(x)
    return ((x - lo) / tf.maximum(hi - lo, 1e-6))[None, :, :, None]


def write_eval(writer, step: int, result: dict) -> None:
    """The scalars of `result` and its example's images (input, masked input,
    and the reconstruction where the objective has one)."""
    with writer.as_default(step=step):
        for k, v in result.items():
            if k != "image":
                tf.summary.scalar(k, v)
        masked, clean, recon = result["image"]
        tf.summary.image("input", _image(clean))
        tf.summary.image("masked_input", _image(masked))
        if "loss_total" in result:
            tf.summary.image("reconstruction", _image(recon))
