"""The paper's learning-rate schedule: linear warm-up, then linear decay to 0."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="m3bert_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(s) = min(lmax s / (w T), lmax (T - s) / (T (1 - w))), never below 0.

    Args:
      max_learning_rate: lmax (paper: 2e-4).
      total_steps: T, optimizer steps.
      warmup_fraction: w (paper: 0.07): the peak is at step w T.
    """

    def __init__(self, max_learning_rate, total_steps, warmup_fraction=0.07):
        self.max_learning_rate = max_learning_rate
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction

    def __call__(self, step):
        s = ops.cast(step, "float32")
        t = float(self.total_steps)
        w = self.warmup_fraction
        up = self.max_learning_rate * s / max(w * t, 1e-12)
        down = self.max_learning_rate * (t - s) / (t * (1.0 - w))
        return ops.maximum(ops.minimum(up, down), 0.0)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
        }
