"""What resuming by content costs: a rerun of bin/extract's job that finds
every track done hashes every input file (SHA-256) to know it is unchanged.

    .venv/bin/python benchmarks/resume_bench.py [--clips=24] [--output=resume.json]

In one process, on the same files: the first extraction (the job's real
work), the rerun that finds everything done (spec checks, the shards'
digests, the sources' digests), and SHA-256 alone over the inputs. Prints the
rerun's share of the extraction and the hashing rate; writes JSON.

Input: 30 s clips of synthesized music as 16-bit WAV at 44.1 kHz (the
largest bytes per second of audio a user is likely to have: hashing is paid
per byte, extraction per second of audio).
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
from machine import cpu_name  # noqa: E402

from m3bert_tf import extract  # noqa: E402
from m3bert_tf.io import storage  # noqa: E402


def write_clip(path: str, seconds: float, seed: int, rate: int = 44100) -> None:
    """Chords of decaying partials over noise: audio no silence check refuses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    y = 0.01 * rng.standard_normal(len(t))
    for f0 in rng.uniform(110, 880, 6):
        y += 0.1 * np.sin(2 * np.pi * f0 * t) * np.exp(-(t % 0.5) * 4)
    soundfile.write(path, (y / np.abs(y).max() * 0.8).astype(np.float32), rate, "PCM_16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = os.path.join(tmp, "audio")
        os.makedirs(audio)
        paths = []
        for i in range(args.clips):
            path = os.path.join(audio, f"clip{i:03d}.wav")
            write_clip(path, 30.0, seed=i)
            paths.append(path)
        config = extract.ExtractConfig(
            input=audio, output_dir=os.path.join(tmp, "out"), progress_interval=1e9
        )
        quiet = lambda message: None  # noqa: E731
        start = time.perf_counter()
        extract.run_extract(config, log=quiet)
        first = time.perf_counter() - start
        start = time.perf_counter()
        again = extract.run_extract(config, log=quiet)
        rerun = time.perf_counter() - start
        assert again["run"]["files"] == 0, "the rerun found work to do"
        start = time.perf_counter()
        storage.sha256_many(paths)
        hashing = time.perf_counter() - start
        size = sum(os.path.getsize(p) for p in paths) / 1e6
    result = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "clips": args.clips,
        "input_mb": round(size, 1), "extract_s": round(first, 2),
        "rerun_s": round(rerun, 3), "hash_s": round(hashing, 3),
        "rerun_share_of_extract": round(rerun / first, 4),
        "hash_mb_per_s": round(size / hashing, 1),
    }  # fmt: skip
    print(
        f"{result['cpu']}, {result['cores']} cores: extracting {args.clips} x 30 s "
        f"({size:.0f} MB of WAV) took {first:.1f} s; the rerun that found it all done "
        f"{rerun:.2f} s ({100 * rerun / first:.1f} % of it), of which hashing the "
        f"sources {hashing:.2f} s ({size / hashing:.0f} MB/s)"
    )
    if args.output:
        storage.write_json(args.output, result)


if __name__ == "__main__":
    main()
