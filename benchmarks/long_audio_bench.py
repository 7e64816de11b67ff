"""Peak memory on long audio: bin/extract and bin/embed on a 1-minute and a
60-minute file, against featurizing the whole file at once (the way before
block-wise features).

    .venv/bin/python benchmarks/long_audio_bench.py [--minutes=60] [--output=...]

Each measurement is a fresh Python process (features in that process: one
worker), its peak resident memory read from /proc/self/status (VmHWM;
getrusage's ru_maxrss survives exec, so a child of a large process would
report its parent's peak). Within 20 % from 1 to 60 minutes is the target
for both jobs; the whole-file reference shows what a long file used to cost.

Then one request to an export's `embed_waveform` signature with 1 and with
10 minutes of audio (`--waveform_only` runs this part alone): a server's
peak memory per request must not grow with what a client sends (10 within
1.5x of 1). A row longer than `serving.graph.MAX_SECONDS` is refused in the
graph before the front end runs, which is what bounds it.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from m3bert_tf.io import logs  # noqa: E402

logs.quiet_tensorflow_import()  # TensorFlow 2.21 prints its import lines before reading the level

from m3bert_tf.demo import corpus  # noqa: E402
from m3bert_tf.io.storage import write_json  # noqa: E402

WAVEFORM_REQUEST = """
import sys; sys.path.insert(0, {root!r})
import numpy as np, tensorflow as tf
model = tf.saved_model.load({model!r})
y = (0.1 * np.random.default_rng(0).standard_normal((1, {seconds} * 44100))).astype(np.float32)
try:
    model.signatures["embed_waveform"](waveform=y, lengths=np.array([y.shape[1]], np.int32))
    print("served")
except tf.errors.InvalidArgumentError as e:
    print("refused:", e.message.split("assertion failed: [", 1)[-1].split("]", 1)[0][:160])
"""

PEAK = 'print([int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0])'

JOBS = {
    "extract": """
import sys, warnings; sys.path.insert(0, {root!r})
from m3bert_tf import extract
extract.run_extract(extract.ExtractConfig(input={audio!r}, output_dir={out!r}, num_workers=1,
    progress_interval=1e9), log=lambda m: None)
""",
    "embed": """
import sys; sys.path.insert(0, {root!r})
from m3bert_tf.serving import embed_job
embed_job.run_embed(embed_job.EmbedConfig(model={model!r}, input={audio!r}, output_dir={out!r},
    num_workers=0, progress_interval=1e9))
""",
    "whole_file_features": """
import sys, warnings; sys.path.insert(0, {root!r}); warnings.simplefilter("ignore")
from m3bert_tf.features import audio, frames
frames.cmvn_with_stats(frames.FeatureExtractor()(audio.load_audio({audio!r})))
""",
}


def write_long(path, minutes):
    """A music-like file of `minutes`, written a minute at a time (PCM 16, 44.1 kHz)."""
    rng = np.random.default_rng(1)
    with soundfile.SoundFile(path, "w", 44100, 1, subtype="PCM_16") as f:
        for i in range(minutes):
            y, _ = corpus.synthesize_track(
                rng, corpus.GENRES[i % 4], corpus.INSTRUMENTS[i % 4], "major", 60.0, 44100
            )
            f.write(y)


def peak_mb(job, **fields) -> float:
    return _peak(JOBS[job].format(root=ROOT, **fields))[0]


def _peak(code: str) -> tuple[float, str]:
    """(peak RSS in MB, the rest of stdout) of `code` in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", code + PEAK], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    *said, peak = proc.stdout.strip().splitlines()
    return int(peak) / 1024, " ".join(said)


def waveform_requests(model: str) -> dict:
    """Peak RSS of one embed_waveform request of 1 and of 10 minutes."""
    out = {}
    for minutes in (1, 10):
        mb, said = _peak(
            WAVEFORM_REQUEST.format(root=ROOT, model=model, seconds=60 * minutes)
        )
        out[f"{minutes}_min_mb"], out[f"{minutes}_min"] = mb, said
        print(f"embed_waveform, one {minutes}-min request: peak RSS {mb:.0f} MB ({said})")
    out["ratio"] = out["10_min_mb"] / out["1_min_mb"]
    print(f"embed_waveform: peak RSS 10 min / 1 min = {out['ratio']:.2f}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--output", default="benchmarks/results/long_audio.json")
    parser.add_argument("--waveform_only", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from embed_bench import make_run

    from m3bert_tf.serving import export

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = make_run(os.path.join(tmp, "tiny"), 2, 64, 2, 128, 256)
        model = export.export_run(tiny, os.path.join(tmp, "export"), log=lambda m: None)
        result["embed_waveform_request"] = waveform_requests(model)
        for minutes in () if args.waveform_only else (1, args.minutes):
            audio = os.path.join(tmp, f"long{minutes}.wav")
            write_long(audio, minutes)
            for job in JOBS:
                out = os.path.join(tmp, f"{job}{minutes}")
                mb = peak_mb(job, audio=audio, out=out, model=model)
                result.setdefault(job, {})[f"{minutes}_min_mb"] = mb
                print(f"{job}, one {minutes}-min file: peak RSS {mb:.0f} MB", flush=True)
    for job, peaks in result.items():
        if job == "embed_waveform_request":
            continue
        peaks["ratio"] = peaks[f"{args.minutes}_min_mb"] / peaks["1_min_mb"]
        print(f"{job}: peak RSS {args.minutes} min / 1 min = {peaks['ratio']:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_json(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
