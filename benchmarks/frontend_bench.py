"""The TensorFlow front end against our librosa extractor, on the same clips.

    .venv/bin/python benchmarks/frontend_bench.py [--clips=16] \
        [--output=benchmarks/results/frontend.json]

In one process, on `--clips` synthesized 30 s music-like clips at 44.1 kHz:
ms per clip of `features.frames.FeatureExtractor` (librosa, one clip at a
time: how bin/extract works per worker) and of `frontend.FrontEnd` (a
compiled `tf.function`, batch 1 and batch 16), each with 1 and 2 threads
(BLAS threads for librosa, TensorFlow's intra-op threads for the front end:
set before TensorFlow starts, so each thread count runs in its own
subprocess). A GPU, when TensorFlow sees one, is named and used for the
front end's rows.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level


def clips(count: int, seconds: float = 30.0) -> list:
    """`count` music-like clips, [seconds x 44100] float32 each."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import music_like

    return [music_like(seconds, seed=i) for i in range(count)]


def measure(threads: int, count: int) -> dict:
    """ms per clip of each way, in this process (threads fixed before TF starts)."""
    import numpy as np
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from m3bert_tf.features.frames import FeatureExtractor, cmvn
    from m3bert_tf.frontend import FrontEnd

    audio = clips(count)
    reference = FeatureExtractor()
    front = FrontEnd(normalization="track")
    run = tf.function(
        front.__call__,
        input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32),
        ],
    )  # fmt: skip
    out = {}
    with threadpool_limits(threads):
        reference(audio[0][: 44100 * 3])  # numba and filter caches warm
        start = time.perf_counter()
        for y in audio:
            cmvn(reference(y))
        out["librosa"] = 1000 * (time.perf_counter() - start) / count
    for batch in (1, 16):
        rows = [np.stack(audio[i : i + batch]) for i in range(0, count, batch)]
        lengths = [np.full(len(r), r.shape[1], np.int32) for r in rows]
        run(rows[0], lengths[0])  # trace
        start = time.perf_counter()
        for r, n in zip(rows, lengths, strict=True):
            run(r, n)[0].numpy()
        out[f"tf_batch_{batch}"] = 1000 * (time.perf_counter() - start) / count
    out["device"] = ", ".join(d.name for d in tf.config.list_logical_devices()) or "CPU"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--output", default="")
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:  # a child: one thread count
        print(json.dumps(measure(args.threads, args.clips)))
        return
    from finetune_bench import cpu_name

    results = {"cpu": cpu_name(), "cpus": os.cpu_count(), "clips": args.clips,
               "clip_seconds": 30.0, "ms_per_clip": {}}  # fmt: skip
    for threads in (1, 2):
        child = subprocess.run(
            [sys.executable, __file__, f"--threads={threads}", f"--clips={args.clips}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results["ms_per_clip"][threads] = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"{results['cpu']} ({results['cpus']} CPUs), {args.clips} x 30 s clips, ms per clip:"
    )
    print(
        f"{'threads':>8s} {'librosa':>9s} {'tf batch 1':>11s} {'tf batch 16':>12s}  device"
    )
    for threads, row in results["ms_per_clip"].items():
        print(f"{threads:>8d} {row['librosa']:9.0f} {row['tf_batch_1']:11.0f} "
              f"{row['tf_batch_16']:12.0f}  {row['device']}")  # fmt: skip
    if args.output:
        from m3bert_tf.io.storage import write_json

        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, results)


if __name__ == "__main__":
    main()
