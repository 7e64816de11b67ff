"""Embedding speed and memory: the exported SavedModel against the Keras model,
and bin/embed end to end.

    .venv/bin/python benchmarks/embed_bench.py [--output=benchmarks/results/embed.json]

In one process (or its children), on the same inputs:

1. windows per second through the loaded SavedModel's `embed` signature
   against the in-memory Keras model (the same computations under
   `tf.function`, as `m3bert_tf.load(run_dir)` runs them), M3BERT-small
   (L=4, H=768) with random weights, batches of 8 windows of --frames frames;
   the ratio is the export's overhead (target: within 10 %);
2. bin/embed end to end (decode, features, model, .npz), audio-hours per
   second, with 1 and 2 workers, on --clips 30 s clips, start-up (loading
   the model, booting workers) included, after an untimed warm-up run and
   the best of --job_repeats; and its steady state, T(2N clips) - T(N clips)
   of the job's own clock (which starts once the model is loaded), in which
   the first files' latency cancels; for WAV clips at 44.1 kHz (decoding is
   almost free) and ogg/vorbis clips at 48 kHz (decoding and resampling paid
   by the workers, as in extract_bench.py). Both layouts (--model_in):
   "workers" (each worker embeds whole tracks; the job's process only hands
   them out: its busy time per clip, the job's clock less its waiting, is
   the serial share s, and W workers on a core each run at max(w / W, s),
   w the 1-worker steady state) and "main" (one model process fed by
   feature workers: its busy time m bounds them; with features f per clip,
   one worker runs at max(f, m), two at (f + m) / 2 at best, W at
   max(f / W, m)).
3. a longer job measured, not predicted: --long_job clips (the --clips
   distinct ones over and over, symlinked as for the steady state), model
   workers, 1 and 2 workers, start-up included, the best of --job_repeats.
Peak memory on long files: benchmarks/long_audio_bench.py.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level

from extract_bench import make_clips  # noqa: E402  (ogg/vorbis clips at 48 kHz)

from m3bert_tf.demo import corpus  # noqa: E402
from m3bert_tf.io.storage import write_json  # noqa: E402


def make_run(directory, layers, hidden, heads, ffn, frames):
    """A run directory holding a randomly initialized encoder."""
    from m3bert_tf.models.encoder import M3BertEncoder

    os.makedirs(directory)
    encoder = M3BertEncoder(layers, hidden, heads, ffn, dropout=0.0)
    encoder.save(os.path.join(directory, "encoder.keras"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"max_frames": frames}, f)
    return directory


def rate(fn, batch, repeats):
    fn(*batch)  # trace / warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*batch)
    return repeats * len(batch[0]) / (time.perf_counter() - start)


def model_throughput(run, export_path, frames, repeats):
    import tensorflow as tf

    from m3bert_tf.runs import load_model as load_run_model
    from m3bert_tf.serving.api import KerasBackend

    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal((8, frames, 324)), tf.float32)
    lengths = tf.constant([frames] * 8, tf.int32)
    keras_fn = KerasBackend(load_run_model(run)[0])._fns["embed"]
    saved = tf.saved_model.load(export_path).signatures["embed"]
    results = {"keras": [], "savedmodel": []}
    for _ in range(3):  # interleaved, so drift hits both
        results["keras"].append(rate(keras_fn, (features, lengths), repeats))
        results["savedmodel"].append(
            rate(lambda f, n: saved(features=f, lengths=n), (features, lengths), repeats)
        )
    best = {k: max(v) for k, v in results.items()}
    return {**{f"{k}_windows_per_s": v for k, v in best.items()},
            "savedmodel_vs_keras": best["savedmodel"] / best["keras"]}  # fmt: skip


EMBED_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from m3bert_tf.serving import embed_job
config = embed_job.EmbedConfig(model={model!r}, input={input!r}, output_dir={out!r},
    num_workers={workers}, model_in={model_in!r}, progress_interval=1e9)
embed_job.claim_model_threads(config)  # as bin/embed
t = time.perf_counter()
r = embed_job.run_embed(config)
print(r["audio_s"], time.perf_counter() - t, r["seconds"], r["waiting_s"])
"""


def run_embed_child(model, input_path, out, workers, repeats=1, model_in="main"):
    """bin/embed's job in a fresh process, `repeats` times, each into a new
    output directory (a rerun into one would skip every file): the best
    "seconds" (start-up included) and, from the run with the best job clock,
    "job_seconds" and "busy_s" (that clock less the job's process's waiting)."""
    runs = []
    for repeat in range(repeats):
        code = EMBED_CHILD.format(
            root=ROOT, model=model, input=input_path, out=f"{out}-{repeat}",
            workers=workers, model_in=model_in,
        )  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        audio_s, seconds, job_seconds, waiting = map(float, proc.stdout.split()[-4:])
        runs.append((seconds, job_seconds, job_seconds - waiting, audio_s))
    seconds, _, _, audio_s = min(runs)
    _, job_seconds, busy, _ = min(runs, key=lambda r: r[1])
    return {"audio_s": audio_s, "seconds": seconds, "job_seconds": job_seconds,
            "busy_s": busy}  # fmt: skip


def end_to_end(tmp, model, clips, count, repeats, model_in):
    """bin/embed with 1 and 2 workers on the clips in `clips` (and on each
    twice, for the steady state): {workers_1, workers_2, speedups}."""
    doubled = repeated(clips, 2 * count)  # the same clips twice: 2N files
    out = {}
    for workers in (1, 2):
        tag = f"{os.path.basename(clips)}-{model_in}-{workers}"
        r = run_embed_child(
            model, clips, os.path.join(tmp, tag), workers, repeats, model_in
        )
        r2 = run_embed_child(
            model, doubled, os.path.join(tmp, tag + "x2"), workers, repeats, model_in
        )
        r["audio_hours_per_s"] = r["audio_s"] / 3600 / r["seconds"]
        r["steady_ms_per_clip"] = 1000 * (r2["job_seconds"] - r["job_seconds"]) / count
        # The job's process busy: the model process ("main"), the hand-out ("workers").
        r["busy_ms_per_clip"] = 1000 * (r2["busy_s"] - r["busy_s"]) / count
        r["busy_s_2n"] = r2["busy_s"]
        out[f"workers_{workers}"] = r
    one, two = out["workers_1"], out["workers_2"]
    out["speedup_2_vs_1"] = one["seconds"] / two["seconds"]
    out["steady_speedup_2_vs_1"] = one["steady_ms_per_clip"] / two["steady_ms_per_clip"]
    # "main": with one worker the model process runs beside it, a clip takes
    # max(f, m); "workers": one worker does all of a clip, the job's process
    # only its serial share s.
    # s: the model process's busy time per clip in steady state; or the job's
    # process's per clip over the whole 2N-clip job (its fixed work included:
    # an upper bound, where the steady-state difference is within noise).
    w = one["steady_ms_per_clip"]
    if model_in == "workers":
        s = 1000 * one["busy_s_2n"] / (2 * count)
    else:
        s = one["busy_ms_per_clip"]
    out["serial_ms_per_clip"] = s
    # A longer job, from the measured start-up (the job's wall time less its
    # clips at the steady rate) and steady state: T(n) = start + n x steady.
    start = {
        k: out[k]["seconds"] - count * out[k]["steady_ms_per_clip"] / 1000
        for k in ("workers_1", "workers_2")
    }
    out["start_up_s"] = start
    out["predicted_job_speedup"] = {
        str(n): (start["workers_1"] + n * w / 1000)
        / (start["workers_2"] + n * two["steady_ms_per_clip"] / 1000)
        for n in (256, 1024, 4096)
    }
    # Amdahl: the serial part never overlaps the workers' (s + w / n); the
    # pipeline bound: it is a stage of its own on a core of its own.
    out["predicted_speedup"] = {
        str(n): {"amdahl": w / (s + w / n), "pipeline_bound": w / max(w / n, s)}
        for n in (2, 4, 8, 16, 32)
    }
    return out


def repeated(clips, count):
    """A directory `<clips>-<count>` of `count` symlinks to the files in
    `clips`, over and over (made once)."""
    many = f"{clips}-{count}"
    if not os.path.isdir(many):
        names = sorted(os.listdir(clips))
        os.makedirs(many)
        for i in range(count):
            name = names[i % len(names)]
            os.symlink(os.path.join(clips, name), os.path.join(many, f"{i:05d}_{name}"))
    return many


def long_job(tmp, model, clips, count, repeats):
    """bin/embed (model workers) with 1 and 2 workers on a job of `count`
    files, start-up included: the clips in `clips` over and over."""
    many = repeated(clips, count)
    out = {"clips": count}
    for workers in (1, 2):
        tag = f"{os.path.basename(many)}-{workers}"
        r = run_embed_child(
            model, many, os.path.join(tmp, tag), workers, repeats, "workers"
        )
        out[f"workers_{workers}_s"] = r["seconds"]
        out["audio_hours"] = r["audio_s"] / 3600
    out["speedup_2_vs_1"] = out["workers_1_s"] / out["workers_2_s"]
    return out


def print_end_to_end(r, model_in, name, clips):
    for workers in (1, 2):
        w = r[f"workers_{workers}"]
        print(f"bin/embed --model_in={model_in}, {clips} x 30 s {name} clips, "
              f"{workers} worker(s): {w['audio_hours_per_s']:.4f} audio-hours/s "
              f"({w['audio_s'] / w['seconds']:.0f}x real time, start-up included); "
              f"steady state {w['steady_ms_per_clip']:.1f} ms per clip", flush=True)  # fmt: skip
    print(f"  1 -> 2 workers: {r['speedup_2_vs_1']:.2f}x the job, "
          f"{r['steady_speedup_2_vs_1']:.2f}x in steady state; start-up "
          f"{r['start_up_s']['workers_1']:.1f} / {r['start_up_s']['workers_2']:.1f} s, "
          "so a job of " + ", ".join(
              f"{n} clips {x:.2f}x" for n, x in r["predicted_job_speedup"].items()),
          flush=True)  # fmt: skip
    one = r["workers_1"]
    busy = "the model process" if model_in == "main" else "the job's process (serial)"
    print(f"  {busy} busy {r['serial_ms_per_clip']:.2f} ms per clip "
          f"beside 1 worker ({one['steady_ms_per_clip']:.1f} ms); predicted speedup "
          "with a core per worker (Amdahl / pipeline bound): " + ", ".join(
              f"{n} workers {x['amdahl']:.2f}x / {x['pipeline_bound']:.2f}x"
              for n, x in r["predicted_speedup"].items()),
          flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1292, help="window frames (30 s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument(
        "--job_repeats",
        type=int,
        default=2,
        help="runs of each job timing; the best counts",
    )
    parser.add_argument(
        "--long_job",
        type=int,
        default=1024,
        help="clips in the measured longer job (0: none)",
    )
    parser.add_argument("--output", default="benchmarks/results/embed.json")
    parser.add_argument(
        "--skip_small_model", action="store_true", help="only bin/embed end to end"
    )
    args = parser.parse_args()
    from m3bert_tf.serving import export

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                     if ln.startswith("Model name")), "unknown")  # fmt: skip
    result = {"cpu": cpu_name, "cores": os.cpu_count(), "bf16": "avx512_bf16" in cpu}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_small_model:
            small = make_run(os.path.join(tmp, "small"), 4, 768, 12, 3072, args.frames)
            small_export = export.export_run(
                small, os.path.join(tmp, "small_export"), log=lambda m: None
            )
            result["model"] = model_throughput(
                small, small_export, args.frames, args.repeats
            )
        if "model" in result:
            print(f"M3BERT-small, batches of 8 x {args.frames} frames: "
                  f"SavedModel {result['model']['savedmodel_windows_per_s']:.2f} windows/s, "
                  f"Keras {result['model']['keras_windows_per_s']:.2f} windows/s, "
                  f"ratio {result['model']['savedmodel_vs_keras']:.3f}", flush=True)  # fmt: skip

        # The end-to-end and memory runs use the tiny model: they measure the
        # audio side (decode, features, windows, files), not the encoder.
        tiny = make_run(os.path.join(tmp, "tiny"), 2, 64, 2, 128, 256)
        tiny_export = export.export_run(
            tiny, os.path.join(tmp, "tiny_export"), log=lambda m: None
        )
        rng = np.random.default_rng(0)
        wav = os.path.join(tmp, "wav")
        os.makedirs(wav)
        for i in range(args.clips):
            y, _ = corpus.synthesize_track(rng, corpus.GENRES[i % 4], corpus.INSTRUMENTS[i % 4],
                                           "major", 30.0, 44100)  # fmt: skip
            soundfile.write(os.path.join(wav, f"c{i:02d}.wav"), y, 44100)
        # An untimed first run: bytecode, the page cache, TensorFlow's first
        # load would otherwise land on whichever run came first.
        warm = os.path.join(tmp, "warm")
        os.makedirs(warm)
        os.symlink(os.path.join(wav, "c00.wav"), os.path.join(warm, "c00.wav"))
        run_embed_child(tiny_export, warm, os.path.join(tmp, "w"), 1)
        ogg = os.path.join(tmp, "ogg")
        os.makedirs(ogg)
        make_clips(ogg, args.clips)
        result["end_to_end"] = {}
        for model_in in ("workers", "main"):
            for name, clips in (("wav_44k", wav), ("ogg_48k", ogg)):
                r = end_to_end(
                    tmp, tiny_export, clips, args.clips, args.job_repeats, model_in
                )
                result["end_to_end"][f"{model_in}_{name}"] = r
                print_end_to_end(r, model_in, name, args.clips)
        for name, clips in (("wav_44k", wav), ("ogg_48k", ogg)) if args.long_job else ():
            r = long_job(tmp, tiny_export, clips, args.long_job, args.job_repeats)
            result["end_to_end"][f"long_job_{name}"] = r
            print(f"bin/embed --model_in=workers, a job of {args.long_job} x 30 s {name} "
                  f"clips ({r['audio_hours']:.1f} h of audio), start-up included: "
                  f"1 worker {r['workers_1_s']:.1f} s, 2 workers {r['workers_2_s']:.1f} s: "
                  f"{r['speedup_2_vs_1']:.2f}x", flush=True)  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_json(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
