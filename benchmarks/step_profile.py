"""Where a training step's time goes: TensorFlow profiler op events, grouped.

    split = profile(run_step, steps)   # run_step() runs one step to completion

The TensorFlow profiler (`tf.profiler.experimental`) traces a few steps; its
host plane's op events ("<op name>:<op type>") are summed per part of the
model, by op type and name scope (forward and gradient ops alike):

- matmul: the dense projections (Q/K/V/output, FFN, input, head), their
  gradients included;
- attention: what attention adds between the projections (scores and
  weighted sum as batched matmuls, mask, softmax, dropout on the
  probabilities, the transposes and reshapes around them);
- layernorm, gelu, dropout (outside attention), optimizer (Adam, gradient
  clipping), other (residual adds, the loss, reductions, casts).

The shares are of the summed op time (2 cores run ops side by side, so the sum
may exceed the wall time); the wall time per step is measured beside it.
"""

import glob
import os
import re
import tempfile
import time
from collections import defaultdict

MATMUL_TYPES = ("MatMul", "BatchMatMul", "Einsum", "Conv")
PROJECTIONS = ("query", "key", "value", "attention_output")


def category(op_name: str, op_type: str) -> str:
    """The part of the step an op belongs to (see the module docstring)."""
    # Keras adds "_1"-style suffixes to name scopes under tf.function.
    scopes = [re.sub(r"_\d+$", "", c) for c in op_name.lower().split("/")]
    kind = op_type.lstrip("_").replace("Mkl", "").replace("Fused", "")
    if any(c in ("adam", "clip_by_global_norm", "global_norm") for c in scopes):
        return "optimizer"
    if op_type.startswith(("ResourceApply", "AssignVariable", "AssignAdd")):
        return "optimizer"
    if "attention_core" in scopes or (
        "attention" in scopes and not any(p in scopes for p in PROJECTIONS)
    ):
        return "attention"
    if kind.startswith(MATMUL_TYPES):
        return "matmul"
    if any(c.endswith("norm") for c in scopes):
        return "layernorm"
    if "gelu" in scopes or kind in ("Erf", "Erfc"):
        return "gelu"
    if any("dropout" in c for c in scopes):
        return "dropout"
    return "other"


def _op_events(logdir: str):
    """(op name, op type, seconds) of every traced op event under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for path in glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:"):
                continue
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name.split("#")[0]
                    if ":" not in name or name.startswith(("__inference", "__forward")):
                        continue
                    op_name, op_type = name.rsplit(":", 1)
                    if op_name.endswith(
                        ":"
                    ):  # "ExecutorState::Process": the executor's own
                        continue
                    if op_type and (op_type[0].isupper() or op_type[0] == "_"):
                        yield op_name, op_type, event.duration_ps * 1e-12


def profile(run_step, steps: int = 2) -> dict:
    """{"wall_s_per_step", "op_s_per_step", "shares": {category: fraction},
    "top_ops": [(op type, s per step)]} of `steps` calls of `run_step`."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(
            logdir, tf.profiler.experimental.ProfilerOptions(host_tracer_level=2)
        )
        start = time.perf_counter()
        for _ in range(steps):
            run_step()
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        per_category, per_type = defaultdict(float), defaultdict(float)
        for op_name, op_type, seconds in _op_events(logdir):
            per_category[category(op_name, op_type)] += seconds / steps
            per_type[op_type] += seconds / steps
    total = sum(per_category.values()) or 1.0
    return {
        "wall_s_per_step": wall,
        "op_s_per_step": total,
        "shares": {
            k: v / total for k, v in sorted(per_category.items(), key=lambda kv: -kv[1])
        },
        "seconds": dict(per_category),
        "top_ops": sorted(per_type.items(), key=lambda kv: -kv[1])[:12],
    }


def format_split(result: dict) -> str:
    """A few lines: each part's share and seconds per step, then the top op types."""
    lines = [
        f"  profile: {result['wall_s_per_step'] * 1000:.0f} ms/step wall, "
        f"{result['op_s_per_step'] * 1000:.0f} ms of op time (summed over threads)"
    ]
    for part, share in result["shares"].items():
        lines.append(
            f"    {part:10s} {share:6.1%}  {result['seconds'][part] * 1000:7.0f} ms"
        )
    lines.append(
        "    top op types: "
        + ", ".join(f"{t} {s * 1000:.0f} ms" for t, s in result["top_ops"][:8])
    )
    return "\n".join(lines)
