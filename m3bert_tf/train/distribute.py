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


PRECISIONS = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(setting: str, accelerators: list[str], flags: set[str]):
    """(Keras policy name or None for float32, a warning or None).

    Args:
      setting: "auto" (bf16 where the hardware computes it: a GPU of compute
        capability 8.0 or newer, a TPU, or a CPU with avx512_bf16 or
        amx_bf16), "bf16" (always: mixed_bfloat16) or "fp32".
      accelerators: "tpu", or "gpu:<major>.<minor>" per GPU; empty on a CPU.
      flags: the CPU's feature flags (`cpu_flags()`).
    """
    if setting not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {setting!r}")
    if setting == "fp32":
        return None, None
    capable = _bf16_capable(accelerators, flags)
    if setting == "bf16":
        warning = None
        if not capable:
            warning = (
                "mixed_precision=bf16 on hardware without bfloat16 arithmetic (no "
                f"{' or '.join(BF16_CPU_FLAGS)} CPU flag, no GPU of compute capability 8.0+ "
                "or TPU): it is emulated and slower than float32 (2.7x slower measured on "
                "such a CPU); use --mixed_precision=auto or fp32"
            )
        return "mixed_bfloat16", warning
    return ("mixed_bfloat16" if capable else None), None


def _bf16_capable(accelerators: list[str], flags: set[str]) -> bool:
    if "tpu" in accelerators:
        return True
    gpus = [a for a in accelerators if a.startswith("gpu:")]
    if gpus:
        return all(float(a.split(":", 1)[1] or 0) >= 8.0 for a in gpus)
    return any(f in flags for f in BF16_CPU_FLAGS)


def local_accelerators() -> list[str]:
    """ "gpu:<major>.<minor>" per local GPU (what `resolve_precision` takes)."""
    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        major, minor = tf.config.experimental.get_device_details(gpu).get(
            "compute_capability", (0, 0)
        )
        out.append(f"gpu:{major}.{minor}")
    return out


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
