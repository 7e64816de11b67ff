"""Extraction speed: our extractor vs librosa's feature functions called one by one.

    .venv/bin/python benchmarks/extract_bench.py [--clips=32] [--output=extract.json]

Everything runs in this one process (or its children) on the same files, so
machine noise hits both sides alike. It measures:

1. per core (one BLAS thread): decode + resample + features + CMVN + float16
   for our `encode.featurize_track`, against the naive way (decode, resample, then
   chroma_stft, melspectrogram, mfcc, delta and cqt each from the waveform
   with the same parameters); audio-hours per core-second, x real time, ratio;
2. the whole `bin/extract` job (shards written, a fresh process each, start-up
   included; after an untimed warm-up run, the best of `--job_repeats`) with
   1 and 2 workers, on the clips linked `--job_copies` times;
   and its steady state, T(2N files) - T(N files), in which the start-up of
   a few seconds (TensorFlow and librosa imports, worker boot) cancels;
3. peak memory (max RSS of the job) for N and 4N files: it must not grow;
4. the serial share: a worker's time per file by stage (decode + features
   spilled, the second pass reading them back normalized, serialization,
   framing and writing) against the parent's (taking the result from the
   pool, appending the framed bytes with their SHA-256, closing shards and
   their indexes, the manifest), and the speedup that share allows at 4, 8,
   16 and 32 workers: Amdahl's law (the parent's work not overlapped at
   all, a lower bound) and the pipeline bound (the parent a stage of its own
   beside the workers: min(workers, worker time / parent time)).
5. (unless --skip_engines) the same job on Beam's DirectRunner, its
   portable runner and Dask against the local pool (`extract_engines.py`).

Input: 30 s clips of synthesized music, ogg/vorbis at 48 kHz (so decoding and
resampling are both paid).
"""

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time

import librosa
import numpy as np
import soundfile
from threadpoolctl import threadpool_limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from m3bert_tf import schema  # noqa: E402
from m3bert_tf.data import records, wire  # noqa: E402
from m3bert_tf.data.shard_writer import ShardWriter  # noqa: E402
from m3bert_tf.datasets.base import Track  # noqa: E402
from m3bert_tf.demo import corpus  # noqa: E402
from m3bert_tf.extract import encode  # noqa: E402
from m3bert_tf.features import frames  # noqa: E402
from m3bert_tf.io.storage import write_json  # noqa: E402

SR, HOP = schema.SAMPLE_RATE, schema.HOP_LENGTH
STFT = dict(n_fft=schema.N_FFT, hop_length=HOP, window="hamming")


def make_clips(directory, count, seconds=30.0, rate=48000):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        genre = corpus.GENRES[i % 4]
        inst = corpus.INSTRUMENTS[(i // 4) % 4]
        y, _ = corpus.synthesize_track(rng, genre, inst, "major", seconds, rate)
        path = os.path.join(directory, f"clip{i:03d}.ogg")
        soundfile.write(path, y, rate)
        paths.append(path)
    return paths


def naive_features(path, tuning=0.0):
    """What a user without our extractor writes: one librosa call per block.

    tuning=0.0 gives our exact features; tuning=None is librosa's default
    chroma (a tuning estimate per track).
    """
    y, rate = soundfile.read(path, dtype="float32")
    y = librosa.resample(y, orig_sr=rate, target_sr=SR)
    chroma = librosa.feature.chroma_stft(y=y, sr=SR, tuning=tuning, **STFT)
    mel = np.log(10 * librosa.feature.melspectrogram(y=y, sr=SR, n_mels=128, **STFT) + 1e-6)
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_mels=128, **STFT)
    delta = librosa.feature.delta(mfcc)
    cqt = librosa.cqt(
        y, sr=SR, hop_length=HOP, fmin=frames.CQT_FMIN, n_bins=144, bins_per_octave=24
    )
    x = np.concatenate([chroma, mfcc, delta, mel, np.log(10 * np.abs(cqt) + 1e-6)]).T
    return frames.to_chunks(frames.cmvn(x))


def time_per_core(paths, fn, repeats):
    fn(paths[0])  # warm-up: imports, filter banks
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for p in paths:
            fn(p)
        best = min(best, time.process_time() - t0)
    return best


def job_seconds(input_dir, out_dir, workers, repeats=1):
    """Wall seconds of `bin/extract` as a user runs it, start-up included: the
    best of `repeats` runs, each into a new output directory (a rerun into
    the same one would resume and skip every file)."""
    best = float("inf")
    for repeat in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "bin", "extract"), f"--input={input_dir}",
             f"--output_dir={out_dir}-{repeat}", f"--num_workers={workers}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        best = min(best, time.perf_counter() - t0)
    return best


def link_copies(paths, directory, copies):
    """A directory of `copies` symlinks to each path (same audio, more files)."""
    os.makedirs(directory)
    for k in range(copies):
        for i, p in enumerate(paths):
            os.symlink(p, os.path.join(directory, f"{k}_{i}.ogg"))
    return directory


def peak_rss_mb(input_dir, out_dir):
    code = (
        "import resource, subprocess, sys;"
        f"subprocess.run([sys.executable, {os.path.join(ROOT, 'bin', 'extract')!r},"
        f" '--input={input_dir}', '--output_dir={out_dir}', '--num_workers=1'],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return int(out.stdout) / 1024


def stage_seconds(paths, directory, shard_size=128):
    """{stage: CPU seconds per file}: a worker's stages, then the parent's.

    The worker's are timed as `encode.write_framed` runs them; the parent's
    on the framed files they leave, as `extract.job._run_locked` handles them.
    """
    extractor = frames.FeatureExtractor()
    worker = dict.fromkeys(("features", "second_pass", "serialize", "frame_and_write"), 0.0)
    framed = []
    write_framed_once = encode.write_framed(
        Track(paths[0], "warm"), extractor, {}, directory
    )
    os.remove(write_framed_once.path)
    for i, path in enumerate(paths):
        track = Track(path, f"t{i}")
        t0 = time.process_time()
        featurized = encode.featurize_track(track, extractor, directory)
        worker["features"] += time.process_time() - t0
        out_path = os.path.join(directory, f".records-{i}.tmp")
        count = 0
        with open(out_path, "wb") as out:
            chunks = iter(featurized.chunks)
            while True:
                t0 = time.process_time()
                chunk = next(chunks, None)
                worker["second_pass"] += time.process_time() - t0
                if chunk is None:
                    break
                t0 = time.process_time()
                record = records.encode_example(
                    chunk, featurized.mean, featurized.std, track.track_id, count, path
                )
                t1 = time.process_time()
                out.write(wire.frame(record))
                worker["frame_and_write"] += time.process_time() - t1
                worker["serialize"] += t1 - t0
                count += 1
        described = encode.serialize_track(track, featurized._replace(chunks=[]), {})
        framed.append(
            encode.FramedTrack(
                out_path, count, described.entry, described.sums, featurized.duration_s
            )
        )
    parent = dict.fromkeys(("from_pool", "append", "close_shards", "manifest"), 0.0)
    writer, closed = None, []
    for number, result in enumerate(framed):
        t0 = time.process_time()
        pickle.loads(pickle.dumps(result))
        t1 = time.process_time()
        if writer is None:
            writer = ShardWriter(os.path.join(directory, f"shard-{number:05d}.tfrecord"))
        writer.add_framed(result.path, result.records, result.entry, result.sums)
        t2 = time.process_time()
        parent["from_pool"] += t1 - t0
        parent["append"] += t2 - t1
        if writer.num_examples >= shard_size or number == len(framed) - 1:
            writer.close()
            closed.append(writer)
            writer = None
            parent["close_shards"] += time.process_time() - t2
    t0 = time.process_time()
    write_json(
        os.path.join(directory, "manifest.json"),
        {"shards": [{"tracks": w.tracks, "sha256": w.sha256} for w in closed]},
    )
    parent["manifest"] += time.process_time() - t0
    n = len(paths)
    return {k: v / n for k, v in worker.items()}, {k: v / n for k, v in parent.items()}


def predicted_speedups(worker_s: float, parent_s: float) -> dict:
    """{workers: (Amdahl, pipeline bound)}, speedups over one worker, whose
    process does both parts in turn (W + S per file). Amdahl: the parent's
    part never overlaps the workers' (S + W / p). Pipeline: the parent is a
    stage of its own on a core of its own (max(W / p, S))."""
    one = worker_s + parent_s
    return {
        p: (one / (parent_s + worker_s / p), one / max(worker_s / p, parent_s))
        for p in (1, 2, 4, 8, 16, 32)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="30 s clips to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--job_repeats",
        type=int,
        default=2,
        help="runs of each job timing; the best counts",
    )
    parser.add_argument(
        "--job_copies", type=int, default=4, help="links per clip for the job"
    )
    parser.add_argument(
        "--skip_engines", action="store_true",
        help="leave out Beam's and Dask's runs (extract_engines.py; they need '.[dask]')",
    )  # fmt: skip
    parser.add_argument("--output", default="", help="write results as JSON here")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="extract_bench_")
    clip_dir = os.path.join(tmp, "clips")
    os.makedirs(clip_dir)
    paths = make_clips(clip_dir, args.clips)
    audio_s = 30.0 * len(paths)
    results = {"clips": len(paths), "clip_seconds": 30.0, "input": "ogg/vorbis 48 kHz"}

    with threadpool_limits(1):
        extractor = frames.FeatureExtractor()
        ours = time_per_core(
            paths, lambda p: encode.featurize_track(Track(p, "x"), extractor), args.repeats
        )
        naive = time_per_core(paths, naive_features, args.repeats)
        naive_default = time_per_core(
            paths, lambda p: naive_features(p, tuning=None), args.repeats
        )
    for name, cpu in (
        ("ours", ours),
        ("naive", naive),
        ("naive_librosa_defaults", naive_default),
    ):
        results[name] = {
            "ms_per_30s_clip": 1000 * cpu / len(paths),
            "x_real_time_per_core": audio_s / cpu,
            "audio_hours_per_core_second": audio_s / 3600 / cpu,
        }
    results["ours_vs_naive"] = naive / ours
    results["ours_vs_naive_librosa_defaults"] = naive_default / ours

    stage_dir = os.path.join(tmp, "stages")
    os.makedirs(stage_dir)
    with threadpool_limits(1):
        worker, parent = stage_seconds(paths, stage_dir)
    worker_s, parent_s = sum(worker.values()), sum(parent.values())
    results["stages_ms_per_file"] = {
        "worker": {k: 1000 * v for k, v in worker.items()},
        "parent": {k: 1000 * v for k, v in parent.items()},
        "worker_total": 1000 * worker_s,
        "parent_total": 1000 * parent_s,
        "parent_share_of_worker": parent_s / worker_s,
    }
    results["predicted_speedup"] = {
        str(p): {"amdahl": a, "pipeline_bound": b}
        for p, (a, b) in predicted_speedups(worker_s, parent_s).items()
    }

    job_dir = link_copies(paths, os.path.join(tmp, "job"), args.job_copies)
    job_audio_s = audio_s * args.job_copies
    # Start-up cancels in T(2N) - T(N): the steady cost of N files.
    half_dir = link_copies(paths, os.path.join(tmp, "half"), args.job_copies // 2)
    # An untimed first run: Python compiles the package's bytecode and the
    # page cache takes the audio, which would otherwise land on whichever
    # job ran first.
    job_seconds(
        link_copies(paths[:2], os.path.join(tmp, "warm"), 1), os.path.join(tmp, "w0"), 2
    )
    runs = args.job_repeats
    one_half = job_seconds(half_dir, os.path.join(tmp, "h1"), 1, runs)
    two_half = job_seconds(half_dir, os.path.join(tmp, "h2"), 2, runs)
    one = job_seconds(job_dir, os.path.join(tmp, "w1"), 1, runs)
    two = job_seconds(job_dir, os.path.join(tmp, "w2"), 2, runs)
    results["job"] = {
        "files": len(paths) * args.job_copies,
        "steady_speedup_2_vs_1": (one - one_half) / (two - two_half),
        "steady_ms_per_file_1_worker": 1000
        * (one - one_half)
        / len(paths)
        / (args.job_copies - args.job_copies // 2),
        "steady_ms_per_file_2_workers": 1000
        * (two - two_half)
        / len(paths)
        / (args.job_copies - args.job_copies // 2),
        "workers_1_seconds": one,
        "workers_2_seconds": two,
        "speedup_2_vs_1": one / two,
        "workers_1_x_real_time": job_audio_s / one,
        "workers_2_x_real_time": job_audio_s / two,
    }

    # Memory: N files, then 4N files (the same clips linked four times).
    n = min(len(paths), 8)
    small = link_copies(paths[:n], os.path.join(tmp, "few"), 1)
    many = link_copies(paths[:n], os.path.join(tmp, "many"), 4)
    results["peak_rss_mb"] = {
        f"{n}_files": peak_rss_mb(small, os.path.join(tmp, "m1")),
        f"{4 * n}_files": peak_rss_mb(many, os.path.join(tmp, "m2")),
    }

    o, v = results["ours"], results["naive"]
    print(
        f"per core, {len(paths)} x 30 s ogg clips at 48 kHz (decode + resample included):"
    )
    print(
        f"  ours : {o['ms_per_30s_clip']:6.1f} ms/clip  {o['x_real_time_per_core']:6.0f}x real "
        f"time  {o['audio_hours_per_core_second']:.4f} audio-h per core-s"
    )
    print(
        f"  naive: {v['ms_per_30s_clip']:6.1f} ms/clip  {v['x_real_time_per_core']:6.0f}x real "
        f"time  {v['audio_hours_per_core_second']:.4f} audio-h per core-s"
    )
    d = results["naive_librosa_defaults"]
    print(
        f"  naive with librosa's default chroma (tuning estimated): {d['ms_per_30s_clip']:6.1f}"
        f" ms/clip  {d['x_real_time_per_core']:6.0f}x real time"
    )
    print(
        f"  ours vs naive: {results['ours_vs_naive']:.2f}x (same parameters), "
        f"{results['ours_vs_naive_librosa_defaults']:.2f}x (librosa defaults)"
    )
    j = results["job"]
    print(
        f"job with shards, {j['files']} x 30 s files: 1 worker {j['workers_1_seconds']:.2f} s "
        f"({j['workers_1_x_real_time']:.0f}x real time), 2 workers {j['workers_2_seconds']:.2f} s "
        f"({j['workers_2_x_real_time']:.0f}x), speedup {j['speedup_2_vs_1']:.2f}x"
    )
    print(
        f"  steady state (T(2N) - T(N), start-up cancelled): "
        f"{j['steady_ms_per_file_1_worker']:.1f} ms/file with 1 worker, "
        f"{j['steady_ms_per_file_2_workers']:.1f} with 2: speedup {j['steady_speedup_2_vs_1']:.2f}x"
    )
    print(f"peak RSS: {results['peak_rss_mb']}")
    st = results["stages_ms_per_file"]
    print(
        "per file, ms of one core: worker "
        + ", ".join(f"{k} {v:.1f}" for k, v in st["worker"].items())
        + f" = {st['worker_total']:.1f}; parent "
        + ", ".join(f"{k} {v:.2f}" for k, v in st["parent"].items())
        + f" = {st['parent_total']:.2f} ({100 * st['parent_share_of_worker']:.1f} % of a worker's)"
    )
    print(
        "  predicted speedup over 1 worker (Amdahl, no overlap / pipeline bound), next to "
        f"the measured 2: {j['speedup_2_vs_1']:.2f}x job, {j['steady_speedup_2_vs_1']:.2f}x steady"
    )
    for p, pred in results["predicted_speedup"].items():
        print(
            f"    {p:>2} workers: {pred['amdahl']:5.2f}x / {pred['pipeline_bound']:5.2f}x"
        )
    if not args.skip_engines:
        import extract_engines

        results["engines"] = extract_engines.measure(paths[:16], tmp)
        extract_engines.report(results["engines"])
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_json(args.output, results)


if __name__ == "__main__":
    main()
