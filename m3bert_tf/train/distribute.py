"""Distribution strategies, batch arithmetic and the precision policy of a job.

The strategy is built here and nowhere else, so that more strategies
(multi-worker, TPU) are added in one place.
"""

import contextlib

import tensorflow as tf


def make_strategy(num_cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs; else over `num_cpu_replicas` logical CPUs.

    Splitting the CPU must happen before TensorFlow initializes its devices.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    if num_cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_replicas
            )
        except RuntimeError as e:
            raise RuntimeError(
                f"num_cpu_replicas={num_cpu_replicas}: TensorFlow already initialized its "
                "devices in this process; set it before any other TensorFlow work"
            ) from e
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][
        : max(num_cpu_replicas, 1)
    ]
    return tf.distribute.MirroredStrategy(devices=devices)


def per_replica_batch_size(
    global_batch_size: int, num_replicas: int, gradient_accumulation_steps: int
) -> int:
    """global_batch_size / (replicas x accumulation steps), which must divide."""
    parts = num_replicas * gradient_accumulation_steps
    if global_batch_size % parts:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"{num_replicas} replicas x gradient_accumulation_steps="
            f"{gradient_accumulation_steps}"
        )
    return global_batch_size // parts


def host_input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext:
    """The InputContext of this host's input pipeline (one pipeline per host)."""
    return tf.distribute.InputContext(
        num_input_pipelines=1,
        input_pipeline_id=0,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )


@contextlib.contextmanager
def precision_policy(name: str | None):
    """Sets Keras' global dtype policy (e.g. "mixed_bfloat16") for the block only.

    Layers take the policy when they are built, so models built inside keep
    it; the process's policy is restored on exit (the next job in the same
    process does not inherit it).
    """
    import keras

    previous = keras.mixed_precision.dtype_policy()
    if name:
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
