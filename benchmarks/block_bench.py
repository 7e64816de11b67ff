"""Training-step cost of the Conformer block against the plain one, side by side.

    .venv/bin/python benchmarks/block_bench.py [--configs=tiny,cpu_base --steps=20]

For each config (`configs/<name>.flags`: its layers, widths, crop length,
batch and precision), our Trainer's pretraining step with `--block=transformer`
and with `--block=conformer` (`--conv_kernel`, 31 by default), in one process,
alternating, on one synthetic batch: median seconds a step, the ratio, and
the parameter counts. What `docs/benchmarks.md` weighs the Conformer's
probe score against.
"""

import argparse
import os
import sys

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import cpu_name  # noqa: E402
from pretrain_bench import median_step, synthetic_batch  # noqa: E402

from m3bert_tf.io.storage import write_json  # noqa: E402
from m3bert_tf.train import distribute, pretrain  # noqa: E402

MODEL_FIELDS = ("num_layers", "hidden_dim", "num_heads", "ffn_dim")


def read_flagfile(name):
    """{flag: value} of configs/<name>.flags (values as written)."""
    values = {}
    with open(os.path.join(ROOT, "configs", f"{name}.flags")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                key, value = line[2:].split("=", 1)
                values[key] = value
    return values


def build(flags, block, conv_kernel):
    """(Trainer, an endless iterator of one synthetic batch) for one block."""
    frames, batch = int(flags["max_frames"]), int(flags["global_batch_size"])
    model = pretrain.ModelConfig(
        **{k: int(flags[k]) for k in MODEL_FIELDS},
        dropout=float(flags.get("dropout", 0.1)),
        block=block,
        conv_kernel=conv_kernel,
    )
    config = pretrain.PretrainConfig(
        data="unused", model_dir="unused", max_frames=frames, global_batch_size=batch,
        model=model, mixed_precision=flags.get("mixed_precision", "auto"), train_steps=1000,
    )  # fmt: skip
    trainer = pretrain.Trainer(config, distribute.make_strategy("mirrored", 1))
    iterator = iter(tf.data.Dataset.from_tensors(synthetic_batch(batch, frames)).repeat())
    return trainer, iterator


def measure(name, steps, conv_kernel):
    flags = read_flagfile(name)
    runs = {}
    for block in ("transformer", "conformer"):
        trainer, iterator = build(flags, block, conv_kernel)
        for _ in range(2):  # trace and warm up
            float(trainer.train_step(iterator)["loss"])
        runs[block] = (trainer, iterator)
    seconds = {block: [] for block in runs}
    for _ in range(3):  # alternate, so a slow phase of the machine hits both
        for block, (trainer, iterator) in runs.items():
            step = lambda t=trainer, i=iterator: float(t.train_step(i)["loss"])  # noqa: E731
            seconds[block].append(median_step(step, steps))
    best = {block: min(s) for block, s in seconds.items()}
    params = {block: trainer.encoder.count_params() for block, (trainer, _) in runs.items()}
    return {
        "config": name,
        "frames": int(flags["max_frames"]),
        "batch": int(flags["global_batch_size"]),
        "seconds_per_step": best,
        "encoder_parameters": params,
        "conformer_over_transformer": best["conformer"] / best["transformer"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,cpu_base")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--conv_kernel", type=int, default=31)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    results = {"cpu": cpu_name(), "conv_kernel": args.conv_kernel, "configs": []}
    for name in args.configs.split(","):
        r = measure(name, args.steps, args.conv_kernel)
        results["configs"].append(r)
        s, p = r["seconds_per_step"], r["encoder_parameters"]
        print(
            f"{name} ({r['frames']} frames x {r['batch']}): transformer "
            f"{1000 * s['transformer']:.1f} ms/step ({p['transformer']:,} params), conformer "
            f"{1000 * s['conformer']:.1f} ms/step ({p['conformer']:,} params): "
            f"{r['conformer_over_transformer']:.2f}x the time [{results['cpu']}]",
            flush=True,
        )
    if args.output:
        write_json(args.output, results)


if __name__ == "__main__":
    main()
