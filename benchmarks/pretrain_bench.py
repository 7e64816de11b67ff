"""Pre-training throughput: our Keras/TF step vs a PyTorch twin, side by side.

    .venv/bin/pip install -e '.[bench]'   # torch==2.13.0, the CPU wheel
    .venv/bin/python benchmarks/pretrain_bench.py [--layers=2 --batch=4 --steps=5]

In one process, on the same machine state:
1. this machine's fp32 matmul peak (a large tf.matmul), FLOP/s;
2. training steps of the small architecture (H=768, A=12, FFN=3072) at the
   full 1294 frames, ours (our Trainer: fp32, mixed_bfloat16, XLA, both) and
   the same model in PyTorch (fp32 eager, bf16 autocast, torch.compile);
   frames/s, the ratios, and our FLOP/s (counted from the architecture) as a
   fraction of the measured peak;
3. the input pipeline alone (parse, crop, cfm+ccm masking, batch): examples/s
   on one core (tf.data private thread pool of 1) and on all cores;
4. the attention's two CPU choices against what they replaced (score matmul
   with keys padded to a multiple of 16, dropout from 16-bit draws);
5. a profile of our float32 step (`step_profile.py`): the share of op time in
   the dense matmuls, attention, LayerNorm, GELU, dropout, the optimizer
   update, and the input pipeline's cost per step on one core.

`--precisions=fp32` skips the bfloat16 runs (slow where bf16 is emulated).
"""

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from m3bert_tf import schema  # noqa: E402
from m3bert_tf.data import pipeline, records  # noqa: E402
from m3bert_tf.io.storage import write_json  # noqa: E402
from m3bert_tf.train import distribute, pretrain  # noqa: E402

H, A, FFN, C = 768, 12, 3072, schema.NUM_FEATURES


def train_flops(layers, batch, frames):
    """FLOPs of one training step (forward x 3), multiply-adds counted as 2."""
    per_token_layer = 2 * (4 * H * H + 2 * H * FFN) + 2 * 2 * frames * H
    per_token = layers * per_token_layer + 2 * (C * H + H * H + H * C)
    return 3 * batch * frames * per_token


def best_seconds(fn, repeats=5):
    """Best wall seconds of `repeats` calls of a traced fn (after one warm-up)."""
    fn = tf.function(fn)
    fn().numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().numpy()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n=4096, repeats=10):
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    return 2 * n**3 / best_seconds(lambda: tf.reduce_sum(tf.matmul(a, b)), repeats)


def median_step(run_step, steps):
    """Median seconds of `steps` calls of run_step() (returns a finite loss):
    one slow step (this machine varies by ~10 %) does not move it."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = run_step()
        times.append(time.perf_counter() - t0)
        assert math.isfinite(loss)
    return float(np.median(times))


def synthetic_batch(batch, frames, seed=0):
    from m3bert_tf.data import masking

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((batch, frames, C)).astype("float32"))
    masked, masks = [], []
    for i in range(batch):
        m, w = masking.mask_compact(
            x[i], frames, tf.constant([i, 0], tf.int64), masking.MaskingConfig()
        )
        masked.append(m)
        masks.append(w)
    masks = {k: tf.stack([w[k] for w in masks]) for k in masks[0]}
    inputs = {
        "features": tf.stack(masked),
        "padding_mask": tf.ones([batch, frames], tf.bool),
    }
    return inputs, x, masks


def build_ours(layers, batch, frames, mixed, xla):
    """(our Trainer, an endless iterator of one synthetic batch)."""
    config = pretrain.PretrainConfig(
        data="unused", model_dir="unused", max_frames=frames, global_batch_size=batch,
        model=pretrain.ModelConfig(num_layers=layers, hidden_dim=H, num_heads=A, ffn_dim=FFN),
        mixed_precision="bf16" if mixed else "fp32", xla=xla, train_steps=1000,
    )  # fmt: skip
    trainer = pretrain.Trainer(config, distribute.make_strategy("mirrored", 1))
    iterator = iter(tf.data.Dataset.from_tensors(synthetic_batch(batch, frames)).repeat())
    return trainer, iterator


def profile_ours(layers, batch, frames):
    """`step_profile.profile` of our float32 step."""
    import step_profile

    trainer, iterator = build_ours(layers, batch, frames, False, False)
    for _ in range(2):
        float(trainer.train_step(iterator)["loss"])
    return step_profile.profile(lambda: float(trainer.train_step(iterator)["loss"]), 2)


def time_ours(layers, batch, frames, steps, mixed, xla):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
    trainer, iterator = build_ours(layers, batch, frames, mixed, xla)
    for _ in range(2):  # trace, compile, warm up
        float(trainer.train_step(iterator)["loss"])
    seconds = median_step(lambda: float(trainer.train_step(iterator)["loss"]), steps)
    keras.mixed_precision.set_global_policy("float32")
    return seconds


def time_torch(layers, batch, frames, steps, mode):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(C, H)
            self.norm = nn.LayerNorm(H, eps=1e-12)
            self.drop = nn.Dropout(0.1)
            layer = nn.TransformerEncoderLayer(
                H,
                A,
                FFN,
                dropout=0.1,
                activation="gelu",
                batch_first=True,
                norm_first=False,
            )
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Sequential(
                nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H, eps=1e-12), nn.Linear(H, C)
            )
            pos = torch.arange(frames)[:, None].float()
            dims = torch.arange(H).float()
            angles = pos * 10000.0 ** (-2 * torch.floor(dims / 2) / H)
            self.register_buffer(
                "pe", torch.where(dims.long() % 2 == 0, angles.sin(), angles.cos())
            )

        def forward(self, x, pad):
            h = self.drop(self.norm(self.proj(x) + self.pe))
            return self.head(self.blocks(h, src_key_padding_mask=pad))

    model = Twin()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
    from m3bert_tf.data import masking

    inputs, targets, masks = synthetic_batch(batch, frames)
    total = masking.expand_weights(masks, inputs["padding_mask"])["total"]
    x = torch.from_numpy(inputs["features"].numpy())
    y = torch.from_numpy(targets.numpy())
    w = torch.from_numpy(total.numpy())
    pad = torch.zeros(batch, frames, dtype=torch.bool)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
            out = model(x, pad)
        loss = (
            nn.functional.huber_loss(out.float(), y, reduction="none") * w
        ).sum() / w.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    if mode == "torch.compile":
        step = torch.compile(step)
    for _ in range(2):
        step().item()
    return median_step(lambda: step().item(), steps)


def attention_details(batch, frames):
    """The two choices in `layers/attention.py`, each against what it replaced,
    at the step's [B, A, T, d]: the score matmul with T keys vs keys padded to
    a multiple of 16, and the probabilities' dropout from float draws
    (`keras.random.dropout`) vs 16-bit draws (`keep_mask_16bit` + where)."""
    import keras

    from m3bert_tf.layers.attention import KEY_ALIGNMENT, keep_mask_16bit

    padded = -(-frames // KEY_ALIGNMENT) * KEY_ALIGNMENT
    q = tf.random.normal([batch, A, frames, H // A])
    k = {n: tf.random.normal([batch, A, n, H // A]) for n in (frames, padded)}
    p = tf.random.uniform([batch, A, frames, padded])
    seed = keras.random.SeedGenerator(0)
    return {
        f"score_matmul_{frames}_keys_s": best_seconds(
            lambda: tf.matmul(q, k[frames], transpose_b=True)[0, 0, 0, 0]
        ),
        f"score_matmul_{padded}_keys_s": best_seconds(
            lambda: tf.matmul(q, k[padded], transpose_b=True)[0, 0, 0, 0]
        ),
        "dropout_float_draws_s": best_seconds(
            lambda: keras.random.dropout(p, 0.1, seed=seed)[0, 0, 0, 0]
        ),
        "dropout_16bit_draws_s": best_seconds(
            lambda: tf.where(keep_mask_16bit(p.shape, 0.1, seed), p, 0.0)[0, 0, 0, 0]
        ),
    }


def pipeline_rate(shard_dir, examples, threads):
    config = pipeline.PipelineConfig(
        data=shard_dir, max_frames=schema.CHUNK_FRAMES, batch_size=8, holdout_percent=0
    )
    ds = pipeline.make_pretrain_dataset(config)
    options = tf.data.Options()
    if threads:
        options.threading.private_threadpool_size = threads
    ds = ds.with_options(options)
    it = iter(ds)
    next(it)
    t0 = time.perf_counter()
    for _ in range(examples // 8):
        next(it)
    return (examples // 8) * 8 / (time.perf_counter() - t0)


def write_shards(directory, count=64, num_shards=4):
    """`count` synthetic 1294-frame examples in `num_shards` shard files."""
    rng = np.random.default_rng(0)
    for s in range(num_shards):
        with tf.io.TFRecordWriter(os.path.join(directory, f"shard-{s:05d}.tfrecord")) as w:
            for i in range(count // num_shards):
                x = rng.standard_normal((schema.CHUNK_FRAMES, C)).astype(np.float16)
                w.write(
                    records.encode_example(
                        x, np.zeros(C), np.ones(C), f"t{s}-{i}", 0, "synthetic"
                    )
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=schema.CHUNK_FRAMES)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--output", default="")
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    L, B, T = args.layers, args.batch, args.frames
    flops = train_flops(L, B, T)
    results = {"layers": L, "batch": B, "frames": T, "train_flops_per_step": flops}

    peak = matmul_peak()
    results["fp32_matmul_peak_flops"] = peak
    print(f"fp32 matmul peak (4096^3 tf.matmul): {peak / 1e9:.1f} GFLOP/s")

    # The pipeline first: PyTorch's OpenMP threads keep spinning after its runs.
    tmp = tempfile.mkdtemp(prefix="pretrain_bench_")
    write_shards(tmp)
    one = pipeline_rate(tmp, 512, threads=1)
    every = pipeline_rate(tmp, 512, threads=0)
    results["pipeline_examples_per_second_1_core"] = one
    results["pipeline_examples_per_second_all_cores"] = every
    print(
        f"input pipeline (parse, crop to {schema.CHUNK_FRAMES}, cfm+ccm masking, batch): "
        f"{one:.0f} examples/s on 1 core, {every:.0f} on {os.cpu_count()} cores"
    )
    ours = {}
    for name, mixed, xla in (
        ("fp32", False, False),
        ("mixed_bfloat16", True, False),
        ("fp32 + XLA", False, True),
        ("mixed_bfloat16 + XLA", True, True),
    ):
        if ("bf16" if mixed else "fp32") in precisions:
            ours[name] = time_ours(L, B, T, args.steps, mixed, xla)
    try:
        import torch  # noqa: F401

        modes = ["fp32 eager", "torch.compile"] + (
            ["bf16 autocast"] if "bf16" in precisions else []
        )
        theirs = {m: time_torch(L, B, T, args.steps, m) for m in modes}
    except ImportError:
        theirs = {}
        print(
            "PyTorch is not installed: pip install -e '.[bench]' for the side-by-side twin"
        )

    frames_per_step = B * T
    print(
        f"\ntraining step, {L} layers, H={H}, batch {B} x {T} frames ({flops / 1e9:.0f} GFLOP/step):"
    )
    for label, table in (("ours", ours), ("pytorch", theirs)):
        for name, seconds in table.items():
            print(
                f"  {label:8s} {name:22s} {seconds * 1000:8.0f} ms/step  {frames_per_step / seconds:8.0f} frames/s"
                f"  {flops / seconds / 1e9:6.1f} GFLOP/s ({flops / seconds / peak:.0%} of peak)"
            )
    best_ours = min(ours, key=ours.get)
    results["ours_seconds"] = ours
    results["pytorch_seconds"] = theirs
    results["ours_best"] = best_ours
    results["ours_best_fraction_of_peak"] = flops / ours[best_ours] / peak
    if "mixed_bfloat16 + XLA" in ours:
        results["ours_mixed_xla_fraction_of_peak"] = (
            flops / ours["mixed_bfloat16 + XLA"] / peak
        )
    if theirs:
        best_theirs = min(theirs, key=theirs.get)
        results["pytorch_best"] = best_theirs
        results["best_vs_best"] = theirs[best_theirs] / ours[best_ours]
        for o, t in (
            ("fp32", "fp32 eager"),
            ("mixed_bfloat16", "bf16 autocast"),
            ("fp32 + XLA", "torch.compile"),
        ):
            if o in ours and t in theirs:
                print(f"  pair {o} vs {t}: ours {theirs[t] / ours[o]:.2f}x")
        print(
            f"  best vs best: ours ({best_ours}) {results['best_vs_best']:.2f}x pytorch ({best_theirs})"
        )

    details = attention_details(B, T)
    results["attention_details"] = details
    print(f"\nattention at batch {B} x {A} heads x {T} frames (forward ops alone):")
    for name, seconds in details.items():
        print(f"  {name[:-2]:32s} {seconds * 1000:6.1f} ms")

    import step_profile

    split = profile_ours(L, B, T)
    results["profile"] = split
    print(f"\nwhere our float32 step's time goes ({L} layers, batch {B} x {T}):")
    print(step_profile.format_split(split))
    print(
        f"    input pipeline: {B / one * 1000:.0f} ms of one core per step, beside the step "
        "(prefetched on its own threads)"
    )
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, results)


if __name__ == "__main__":
    main()
