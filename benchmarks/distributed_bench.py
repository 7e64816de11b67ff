#!/usr/bin/env python3
"""Beyond one machine: what the pieces cost, measured here, and the cost table.

    python benchmarks/distributed_bench.py --output=benchmarks/results/distributed.json

1. The pretraining pipeline (1294 frames, cfm+ccm, batch 8) in this process,
   then through tf.data service with 1 and 2 worker processes, each pinned
   to one core (`taskset`): examples/s per worker, and the scaling.
2. Extraction of the example corpus: the local process pool against Beam's
   DirectRunner, the same worker count, files/s; and the core-hours per
   1000 hours of audio.
3. The cost table: FLOPs per example and per step of the small and large
   configs counted from the architecture, checked against TensorFlow's
   profiler on the traced training step; the time of the paper's runs on
   named accelerators at a stated utilization; and the tf.data service
   workers that feed one accelerator at the measured per-core rate.

Prints the ratios and a markdown table (the README's), writes JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level

import tensorflow as tf  # noqa: E402
from pretrain_bench import write_shards  # noqa: E402

from m3bert_tf import schema  # noqa: E402
from m3bert_tf.data import pipeline, service  # noqa: E402

C = schema.NUM_FEATURES
CONFIGS = {  # the paper's runs: (layers, steps, global batch)
    "small": (4, 200_000, 128),
    "large": (12, 500_000, 128),
}
# Dense bf16 peaks (vendor figures) and the utilization the table assumes.
ACCELERATORS = {"H100 SXM": 989e12, "A100": 312e12, "TPU v5e": 197e12}
UTILIZATION = 0.40


def forward_flops(layers, frames, hidden=768, ffn=3072):
    """Forward FLOPs of one example (multiply-adds as 2): input projection,
    per layer Q/K/V/output projections, scores and context, FFN; the head."""
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 2 * 2 * frames * hidden
    per_token = layers * per_token_layer + 2 * (C * hidden + hidden * hidden + hidden * C)
    return frames * per_token


def profiled_train_flops(layers, frames):
    """FLOPs TensorFlow's profiler counts in the graph of one example's
    forward and backward pass (every op with a registered count)."""
    from m3bert_tf.train import pretrain

    config = pretrain.PretrainConfig(
        data="unused", model_dir="unused", max_frames=frames, global_batch_size=1,
        model=pretrain.ModelConfig(num_layers=layers, dropout=0.0), mixed_precision="fp32",
    )  # fmt: skip
    _, model = pretrain.build_models(config)
    model(
        {"features": tf.zeros([1, frames, C]), "padding_mask": tf.ones([1, frames], bool)}
    )

    @tf.function(
        input_signature=[tf.TensorSpec([1, frames, C]), tf.TensorSpec([1, frames], tf.bool)]
    )
    def step(x, pad):
        with tf.GradientTape() as tape:
            out = model({"features": x, "padding_mask": pad}, training=True)
            loss = tf.reduce_sum(tf.square(out["reconstruction"] - x))
        return tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function().graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def rate(dataset, examples, batch):
    it = iter(dataset)
    for _ in range(4):  # the first batches pay start-up (service: job creation)
        next(it)
    t0 = time.perf_counter()
    for _ in range(examples // batch):
        next(it)
    return (examples // batch) * batch / (time.perf_counter() - t0)


def service_rates(shard_dir, examples):
    config = pipeline.PipelineConfig(
        data=shard_dir, max_frames=schema.CHUNK_FRAMES, batch_size=8, holdout_percent=0
    )
    local = pipeline.make_pretrain_dataset(config)
    one_core = tf.data.Options()
    one_core.threading.private_threadpool_size = 1
    out = {
        "local_all_cores": rate(local, examples, 8),
        "local_one_thread": rate(local.with_options(one_core), examples, 8),
    }
    for workers in (1, 2):
        dispatcher = service.start_dispatcher()
        procs = [
            subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(i % os.cpu_count()),
                    sys.executable,
                    os.path.join(ROOT, "bin", "data_service"),
                    "--mode=worker",
                    f"--dispatcher={dispatcher.target}",
                ],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for i in range(workers)
        ]
        try:
            time.sleep(8)  # the workers import TensorFlow and register
            # Best of two jobs: the trainer side shares these cores, and
            # its scheduling against the pinned workers varies run to run.
            out[f"service_{workers}_workers"] = max(
                rate(
                    pipeline.make_pretrain_dataset(
                        config,
                        service=pipeline.DataService(
                            dispatcher.target, f"bench-{workers}-{attempt}"
                        ),
                    ),
                    examples,
                    8,
                )
                for attempt in range(2)
            )
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return out


def extraction_rates(corpus_dir, workers):
    out = {}
    audio_seconds = None
    for runner in ("local", "beam"):
        target = tempfile.mkdtemp(prefix=f"extract-{runner}-")
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "bin", "extract"), f"--input={corpus_dir}",
             f"--output_dir={target}", f"--runner={runner}", f"--num_workers={workers}"],
            check=True, capture_output=True,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        with open(os.path.join(target, "manifest.json")) as f:
            manifest = json.load(f)
        audio_seconds = manifest["counts"]["audio_hours"] * 3600
        out[runner] = {
            "seconds": seconds,
            "files_per_s": manifest["counts"]["tracks"] / seconds,
        }
        shutil.rmtree(target)
    # Core-seconds per audio-second, the job's start-up included.
    out["core_hours_per_1000_audio_hours"] = (
        out["local"]["seconds"] * workers / audio_seconds * 1000
    )
    return out


def cost_table(per_core_rate):
    rows, out = [], {}
    for name, (layers, steps, batch) in CONFIGS.items():
        per_example = 3 * forward_flops(layers, schema.CHUNK_FRAMES)
        profiled = profiled_train_flops(layers, schema.CHUNK_FRAMES)
        per_step = per_example * batch
        times = {
            f"{kind} x{n}": steps * per_step / (n * peak * UTILIZATION) / 3600
            for kind, peak in ACCELERATORS.items()
            for n in (1, 8, 64)
        }
        consume = ACCELERATORS["H100 SXM"] * UTILIZATION / per_example
        out[name] = {
            "train_flops_per_example": per_example,
            "profiled_train_flops_per_example": profiled,
            "profiled_over_counted": profiled / per_example,
            "train_flops_per_step": per_step,
            "hours": times,
            "h100_examples_per_s": consume,
            "service_cores_per_h100": consume / per_core_rate,
        }
        rows.append(
            (name, layers, steps, batch, per_example, profiled, per_step, times, consume)
        )
    return out, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=960)
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next(
        (x.split(":", 1)[1].strip() for x in lscpu.splitlines() if "Model name" in x), "?"
    )
    print(f"CPU: {cpu}, {os.cpu_count()} cores")
    results = {"cpu": cpu, "cores": os.cpu_count()}

    with tempfile.TemporaryDirectory() as tmp:
        write_shards(tmp, num_shards=8)
        rates = service_rates(tmp, args.examples)
    results["pipeline_examples_per_s"] = rates
    print(
        "pipeline at 1294 frames, cfm+ccm: local "
        f"{rates['local_all_cores']:.0f}/s on all cores, {rates['local_one_thread']:.0f}/s on "
        "one thread; tf.data service, one core per worker: "
        f"1 worker {rates['service_1_workers']:.0f}/s, 2 workers "
        f"{rates['service_2_workers']:.0f}/s "
        f"({rates['service_2_workers'] / rates['service_1_workers']:.2f}x)"
    )

    from m3bert_tf.demo import corpus

    with tempfile.TemporaryDirectory() as tmp:
        corpus.write_example_corpus(tmp, num_tracks=args.tracks, max_duration=40.0)
        extraction = extraction_rates(os.path.join(tmp, "audio"), os.cpu_count())
    results["extraction"] = extraction
    print(
        f"extraction of {args.tracks} files, {os.cpu_count()} workers: local pool "
        f"{extraction['local']['files_per_s']:.2f} files/s, Beam DirectRunner "
        f"{extraction['beam']['files_per_s']:.2f} files/s "
        f"({extraction['beam']['files_per_s'] / extraction['local']['files_per_s']:.2f}x); "
        f"{extraction['core_hours_per_1000_audio_hours']:.1f} core-hours per 1000 h of audio"
    )

    per_core = rates["service_1_workers"]
    table, rows = cost_table(per_core)
    results["cost"] = table
    print(f"\nAt {UTILIZATION:.0%} of each accelerator's dense bf16 peak; pipeline {per_core:.0f} "
          "examples/s per core (measured above):\n")  # fmt: skip
    kinds = [f"{k} x{n}" for k in ACCELERATORS for n in (1, 8, 64)]
    print("| config | train GFLOP/example (counted / TF profile) | TFLOP/step | "
          + " | ".join(kinds) + " | H100 examples/s | service cores per H100 |")  # fmt: skip
    print("|" + " --- |" * (5 + len(kinds)))
    for name, layers, steps, batch, per_example, profiled, per_step, times, consume in rows:
        print(
            f"| {name} (L={layers}, {steps // 1000}k steps x {batch}) | "
            f"{per_example / 1e9:.0f} / {profiled / 1e9:.0f} | {per_step / 1e12:.1f} | "
            + " | ".join(
                f"{times[k]:.0f} h" if times[k] >= 1 else f"{times[k] * 60:.0f} min"
                for k in kinds
            )  # fmt: skip
            + f" | {consume:.0f} | {consume / per_core:.1f} |"
        )
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
