"""Distribution strategies, batch arithmetic and the precision policy of a job.

The strategy is built here and nowhere else: one device, local mirrored
replicas, a multi-worker cluster from TF_CONFIG, or a TPU.
"""

import contextlib
import dataclasses
import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device", "tpu")


def cluster_config() -> dict | None:
    """TF_CONFIG's {"cluster": ..., "task": ...} when it names a cluster of
    more than one task (a multi-worker job), else None.

    Raises:
      ValueError: TF_CONFIG is set but is not such JSON.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return None
    try:
        config = json.loads(text)
        cluster = config.get("cluster", {})
        tasks = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a cluster spec in JSON: {e}") from None
    return config if tasks > 1 else None


def make_strategy(
    kind: str = "auto", num_cpu_replicas: int = 1, tpu: str = ""
) -> tf.distribute.Strategy:
    """The job's strategy.

    Args:
      kind: "auto" (multi_worker when TF_CONFIG names a cluster, else
        mirrored), "mirrored" (all local GPUs; with none, `num_cpu_replicas`
        logical CPUs), "multi_worker" (MultiWorkerMirroredStrategy over
        TF_CONFIG's cluster, each worker mirrored over its local GPUs or one
        CPU), "one_device" (the first GPU, else the CPU) or "tpu"
        (TPUStrategy on the TPU named by `tpu`; "" = the local one).
      num_cpu_replicas: with no GPU, split the CPU into this many logical
        devices (mirrored only). Must happen before TensorFlow initializes
        its devices.

    Raises:
      ValueError: an unknown `kind`, or multi_worker without a TF_CONFIG
        cluster.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        kind = "multi_worker" if cluster_config() else "mirrored"
    if kind == "multi_worker":
        if cluster_config() is None:
            raise ValueError(
                "strategy=multi_worker: TF_CONFIG does not name a cluster of two or more "
                'tasks ({"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
                '"worker", "index": i}})'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
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


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in the job: which worker, of how many, and
    whether it is the chief (the one that writes the run directory)."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def label(self) -> str:
        return f"[worker {self.index}/{self.count}]" if self.count > 1 else ""


def worker_of(strategy: tf.distribute.Strategy) -> Worker:
    """The `Worker` of this process under `strategy` (index 0 of 1 off a cluster).

    Workers are numbered as MultiWorkerMirroredStrategy numbers them: the
    chief (if the cluster has one) first, then "worker" 0, 1, ...
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not resolver:
        return Worker()
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    count = chiefs + len(spec.get("worker", []))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    index = task_id if task_type == "chief" else chiefs + task_id
    return Worker(index, count)


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """Replicas on this host (all of them off a cluster)."""
    return len(strategy.extended.worker_devices)


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
    """The InputContext of this host's input pipeline: one pipeline per worker,
    numbered as `worker_of` numbers the workers."""
    worker = worker_of(strategy)
    return tf.distribute.InputContext(
        num_input_pipelines=worker.count,
        input_pipeline_id=worker.index,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )


PRECISIONS = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA, DNNL_MAX_CPU_ISA in older builds)
# under which it still computes in bfloat16; a lower cap (e.g. AVX2, to
# reproduce another CPU's float32 numbers) leaves bf16 without its kernels.
BF16_ISA_CAPS = frozenset(
    {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
     "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
     "AVX10_2_512", "AVX10_2_512_AMX_2"}
)  # fmt: skip


def cpu_flags(environ=None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere), less
    the bfloat16 ones where the environment caps oneDNN below bf16 kernels."""
    environ = os.environ if environ is None else environ
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    if cap and cap.strip().upper() not in BF16_ISA_CAPS:
        flags -= set(BF16_CPU_FLAGS)
    return flags


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
                "such a CPU); use mixed_precision=auto or fp32"
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
