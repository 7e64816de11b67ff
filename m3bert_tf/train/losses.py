"""The masked reconstruction loss (keras.ops only)."""

from keras import ops


def huber(targets, predictions, delta: float = 1.0):
    """Elementwise Huber: 0.5 e^2 where |e| < delta, else delta (|e| - 0.5 delta)."""
    error = ops.abs(ops.cast(predictions, "float32") - ops.cast(targets, "float32"))
    quadratic = ops.minimum(error, delta)
    return 0.5 * quadratic**2 + delta * (error - quadratic)


def masked_huber(targets, predictions, weights, delta: float = 1.0):
    """Huber over the weighted elements only: sum(h * w) / sum(w) (0 if no weight).

    Keras' default reduction would divide by every element, masked or not.
    """
    weights = ops.cast(weights, "float32")
    total = ops.sum(huber(targets, predictions, delta) * weights)
    count = ops.sum(weights)
    return ops.where(count > 0, total / ops.maximum(count, 1e-12), 0.0)
