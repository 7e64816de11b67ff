"""Fine-tuning speed: training on the frozen encoder's cached outputs against
recomputing the encoder every step, and the one-time cost of the cache.

    .venv/bin/python benchmarks/finetune_bench.py [--configs=tiny,small] \
        [--output=benchmarks/results/finetune.json]

In one process, for each encoder config (random weights; tiny: L=2, H=64;
small: L=4, H=768), on the same synthesized labeled 30 s clips (the example
corpus, 1294 frames each, training crop = the whole clip):

1. the cache: seconds to fill it (`example_cache.open_cache`: read, normalize,
   encode in windows, write) and clips per second;
2. steps per second of `FinetuneTrainer.train_step` on batches of the cache
   (enrichment layer and heads on cached encoder outputs), against the same
   model, encoder frozen, run on feature batches (the encoder recomputed each
   step: what fine-tuning did before the cache);
3. the ratio (target: at least 5x for tiny).
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from machine import cpu_name  # noqa: E402

from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level

CONFIGS = {
    "tiny": dict(num_layers=2, hidden_dim=64, num_heads=2, ffn_dim=128),
    "small": dict(num_layers=4, hidden_dim=768, num_heads=12, ffn_dim=3072),
}


def labeled_clips(directory: str, clips: int) -> str:
    """Shards of `clips` labeled 30 s example-corpus tracks (one 1294-frame chunk each)."""
    from m3bert_tf import extract
    from m3bert_tf.demo import corpus

    corpus.write_example_corpus(
        os.path.join(directory, "corpus"), num_tracks=clips, min_duration=30.0,
        max_duration=30.0,
    )  # fmt: skip
    extract.run_extract(
        extract.ExtractConfig(
            input=os.path.join(directory, "corpus", "manifest.csv"),
            output_dir=os.path.join(directory, "shards"),
            progress_interval=1e9,
        ),  # fmt: skip
        log=lambda msg: None,
    )
    return os.path.join(directory, "shards")


def steps_per_second(trainer, batches, steps) -> float:
    trainer.train_step(next(batches))  # trace
    start = time.perf_counter()
    for _ in range(steps):
        float(trainer.train_step(next(batches))["loss"])
    return steps / (time.perf_counter() - start)


def bench(name, data, directory, batch_size, steps, ref_steps) -> dict:
    from m3bert_tf import schema
    from m3bert_tf.data import shards
    from m3bert_tf.models.encoder import M3BertEncoder
    from m3bert_tf.runs import example_cache
    from m3bert_tf.tasks import mixing_probabilities, read_task_info
    from m3bert_tf.train.batches import CachedBatches
    from m3bert_tf.train.configs import FinetuneConfig
    from m3bert_tf.train.finetune import FinetuneTrainer

    frames = schema.CHUNK_FRAMES
    specs, _ = read_task_info(shards.read_manifests(data))
    tasks = sorted(specs)
    encoder = M3BertEncoder(**CONFIGS[name], dropout=0.0, name="encoder")
    config = FinetuneConfig(pretrained="", data=data, model_dir="", batch_size=batch_size,
                            max_frames=frames, dropout=0.0)  # fmt: skip
    trainer = FinetuneTrainer(config, [specs[t] for t in tasks], encoder, frames)

    def source(cached_encoder):
        return example_cache.CacheSource(
            data=data, label_sizes={t: specs[t].size for t in tasks}, normalization="track",
            stats=None, encoder=cached_encoder, window=trainer.window,
        )  # fmt: skip

    start = time.perf_counter()
    cache = example_cache.open_cache(
        os.path.join(directory, name), source(encoder), lambda m: None
    )
    fill = time.perf_counter() - start
    features = example_cache.open_cache(
        os.path.join(directory, name + "-features"), source(None), lambda m: None
    )
    probs = mixing_probabilities({t: len(cache.ids("train", t)) for t in tasks}, 1.0)
    cached = steps_per_second(
        trainer, CachedBatches(cache, tasks, probs, batch_size, -(-frames // cache.frame_stack),
                               0, "sequence"), steps,
    )  # fmt: skip
    reference = FinetuneTrainer(
        dataclasses.replace(config, unfreeze_top_blocks=0), [specs[t] for t in tasks],
        M3BertEncoder(**CONFIGS[name], dropout=0.0, name="encoder"), frames,
    )  # fmt: skip
    reference.train_model = reference.model  # the encoder (frozen) runs every step
    recomputed = steps_per_second(
        reference, CachedBatches(features, tasks, probs, batch_size, frames, 0, "features"),
        ref_steps,
    )  # fmt: skip
    result = {
        "config": name, **CONFIGS[name], "clips": len(cache), "frames_per_clip": frames,
        "batch_size": batch_size, "cache_fill_s": round(fill, 2),
        "cache_fill_clips_per_s": round(len(cache) / fill, 2),
        "cached_steps_per_s": round(cached, 2), "recomputed_steps_per_s": round(recomputed, 3),
        "speedup": round(cached / recomputed, 1),
    }  # fmt: skip
    print(
        f"{name}: cache filled in {fill:.1f} s ({result['cache_fill_clips_per_s']} clips/s); "
        f"{cached:.1f} steps/s on the cache vs {recomputed:.3f} recomputing the encoder: "
        f"{result['speedup']}x",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--reference_steps", type=int, default=3)
    parser.add_argument(
        "--output", default=os.path.join(ROOT, "benchmarks", "results", "finetune.json")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = labeled_clips(tmp, args.clips)
        results = [
            bench(name, data, tmp, args.batch_size, args.steps, args.reference_steps)
            for name in args.configs.split(",")
        ]
    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "results": results}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.output} ({out['cpu']}, {out['cores']} cores)")


if __name__ == "__main__":
    main()
