"""The LiteRT files against the SavedModel: size, latency per 10 s of audio,
and what each variant costs in quality.

    make demo   # writes demo_output/: the corpus, shards, the export with its .tflite files
    .venv/bin/python benchmarks/litert_bench.py [--workdir=demo_output] [--output=litert.json]

In one process, on the demo's newest export (fine-tuned tiny model):

1. size on disk: the SavedModel (saved_model.pb and variables/) and each
   LiteRT file (float32; float16 weights; dynamic-range int8);
2. latency: `embed_waveform` on 10 s of one corpus track (the front end
   included), batch 1, the median of `--repeats` calls after a warm-up:
   the SavedModel through TensorFlow, each file through `ai_edge_litert`
   (both with their default thread pools on this machine's cores);
3. quality: every corpus track's clip embedding by each (the waveform
   through the file's own front end), probed with `bin/evaluate`'s protocol
   (5 folds, every track tested once, 95 % intervals), each variant paired
   against float32 LiteRT on the same resamples. The cost of a variant is
   its score minus float32's; "not resolved" means within the noise of
   the corpus's 160 tracks.
"""

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from machine import cpu_name  # noqa: E402

import m3bert_tf  # noqa: E402
from m3bert_tf import datasets  # noqa: E402
from m3bert_tf.evaluate import job as evaluate_job  # noqa: E402
from m3bert_tf.features import audio  # noqa: E402
from m3bert_tf.io import storage  # noqa: E402
from m3bert_tf.serving import litert  # noqa: E402


def newest_export(workdir: str) -> str:
    versions = glob.glob(os.path.join(workdir, "export", "*", litert.LITERT_NAME))
    if not versions:
        sys.exit(
            f"no export with {litert.LITERT_NAME} under {workdir}/export: run make demo"
        )
    return max(
        (os.path.dirname(v) for v in versions), key=lambda d: int(os.path.basename(d))
    )


def savedmodel_bytes(path: str) -> int:
    files = [
        os.path.join(path, "saved_model.pb"),
        *glob.glob(os.path.join(path, "variables", "*")),
    ]
    return sum(os.path.getsize(f) for f in files)


def latency_ms(model, y: np.ndarray, repeats: int) -> float:
    lengths = np.array([len(y)], np.int32)
    model.backend.call("embed_waveform", y[None], lengths)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.backend.call("embed_waveform", y[None], lengths)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def embed_corpus(model, tracks, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for track in tracks:
        out = model.embed_file(track.path)
        np.savez(os.path.join(directory, f"{track.track_id}.npz"),
                 clip_embedding=out["clip_embedding"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "demo_output"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    export_dir = newest_export(args.workdir)
    models = {"SavedModel": m3bert_tf.load(export_dir, frontend="tf")}
    for variant, name in litert.VARIANTS.items():
        models[f"LiteRT {variant}"] = m3bert_tf.load(os.path.join(export_dir, name))
    sizes = {"SavedModel": savedmodel_bytes(export_dir)}
    sizes |= {
        f"LiteRT {v}": os.path.getsize(os.path.join(export_dir, n))
        for v, n in litert.VARIANTS.items()
    }
    loaded = datasets.find_tracks(os.path.join(args.workdir, "corpus", "manifest.csv"))
    tracks = loaded.tracks
    y = audio.load_audio(tracks[0].path)
    y = np.resize(y, 10 * 44100).astype(np.float32)  # 10 s (repeated where shorter)
    latency = {name: latency_ms(m, y, args.repeats) for name, m in models.items()}

    with tempfile.TemporaryDirectory() as tmp:
        embeddings = []
        for name, model in models.items():
            if name == "SavedModel":
                continue
            directory = os.path.join(tmp, name.split()[-1])
            embed_corpus(model, tracks, directory)
            embeddings.append(f"{name.split()[-1]}={directory}")
        judged = evaluate_job.run_evaluate(
            evaluate_job.EvaluateConfig(
                data=os.path.join(args.workdir, "shards"), output_dir=os.path.join(tmp, "eval"),
                baselines=("mfcc",), embeddings=tuple(embeddings), probes=("linear",),
                seeds=2, epochs=60, folds=5, added_value=False,
            ),
            log=lambda m: None,
        )  # fmt: skip
    quality = {}
    for task, result in judged["tasks"].items():
        rows = {r["set"]: r for r in result["rows"]}
        quality[task] = {"float32": rows["float32"]["mean"]["score"]}
        for c in result["comparisons"]:
            pair = {c["a"], c["b"]}
            for variant in ("float16", "int8"):
                if pair == {"float32", variant}:  # as variant - float32
                    sign = 1 if c["a"] == variant else -1
                    low, high = (sign * x for x in c["interval"])
                    quality[task][variant] = {
                        "difference": sign * c["difference"],
                        "interval": sorted([low, high]), "resolved": c["resolved"],
                    }  # fmt: skip
    cpu = f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"{export_dir} on {cpu}, {time.strftime('%Y-%m-%d')}")
    print("| | size (MB) | ms per 10 s (embed_waveform, batch 1) | speed, SavedModel = 1 |")
    print("| --- | --- | --- | --- |")
    for name in models:
        print(f"| {name} | {sizes[name] / 1e6:.2f} | {latency[name]:.1f} | "
              f"{latency['SavedModel'] / latency[name]:.2f}x |")  # fmt: skip
    print("| task | float32 score | float16 - float32 | int8 - float32 |")
    print("| --- | --- | --- | --- |")
    for task, q in quality.items():
        cells = []
        for variant in ("float16", "int8"):
            c = q.get(variant)
            cells.append(
                "-"
                if c is None
                else f"{c['difference']:+.3f} [{c['interval'][0]:+.3f}, "
                f"{c['interval'][1]:+.3f}] {'resolved' if c['resolved'] else 'not resolved'}"
            )
        print(f"| {task} | {q['float32']:.3f} | {cells[0]} | {cells[1]} |")
    if args.output:
        storage.write_json(args.output, {
            "export": export_dir, "cpu": cpu, "sizes": sizes, "latency_ms": latency,
            "quality": quality,
        })  # fmt: skip


if __name__ == "__main__":
    main()
