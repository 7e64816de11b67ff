"""Extraction on the engines against the local pool, the same files, one process tree.

    .venv/bin/python benchmarks/extract_engines.py [--clips=16] [--output=engines.json]
    (also part of benchmarks/extract_bench.py's run)

For each engine, the whole `bin/extract` job as a user runs it (a fresh
process, start-up included) on N and 2N files (30 s clips linked again),
so that T(2N) - T(N) is the steady cost of N files, start-up cancelled:

- the local pool, 1 and 2 worker processes;
- Beam's DirectRunner, 2 worker processes;
- Beam's portable runner: its reference job service (asked for 2 SDK
  workers a job) and an external SDK worker pool on 127.0.0.1;
- Dask: a scheduler and 2 worker processes on 127.0.0.1 (DaskRunner).

Printed and written: files/s (steady), the overhead per file against the
local pool at the same number of workers, and the start-up (T(N) less N
files at the steady rate); each timing the best of two runs. The clusters are started before the timing:
their start is a cluster's cost, not a job's.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import cpu_name  # noqa: E402

from m3bert_tf.extract import local_engines  # noqa: E402
from m3bert_tf.io.storage import write_json  # noqa: E402


def _job_seconds(input_dir, out_dir, flags) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "extract"), f"--input={input_dir}",
         f"--output_dir={out_dir}", *flags],
        env=local_engines.engine_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, check=True,
    )  # fmt: skip
    return time.perf_counter() - t0


def _steady(name, dirs, tmp, flags, files, repeats) -> dict:
    """Times the job on N then 2N files (the best of `repeats` each), after
    an untimed run (workers that outlive a job, Dask's, import and load
    once); the steady rate from the difference."""
    _job_seconds(dirs[0], os.path.join(tmp, f"{name}-warm"), flags)
    small, large = (
        min(
            _job_seconds(d, os.path.join(tmp, f"{name}-{i}-{r}"), flags)
            for r in range(repeats)
        )
        for i, d in enumerate(dirs)
    )
    per_file = (large - small) / files
    return {
        "seconds_n": small,
        "seconds_2n": large,
        "steady_ms_per_file": 1000 * per_file,
        "steady_files_per_s": 1 / per_file,
        "start_up_s": small - files * per_file,
    }


def measure(clip_paths, tmp, copies=4, repeats=2) -> dict:
    """{engine: timings} on `copies` and 2 x `copies` links of each clip."""
    from extract_bench import link_copies

    dirs = [
        link_copies(clip_paths, os.path.join(tmp, "eng-n"), copies),
        link_copies(clip_paths, os.path.join(tmp, "eng-2n"), 2 * copies),
    ]
    files = len(clip_paths) * copies
    out = {"files_n": files, "cpu": cpu_name()}
    for workers in (1, 2):
        out[f"local_{workers}"] = _steady(
            f"local{workers}", dirs, tmp, [f"--num_workers={workers}"], files, repeats
        )
    out["beam_direct_2"] = _steady(
        "direct", dirs, tmp, ["--runner=beam", "--num_workers=2"], files, repeats
    )
    with local_engines.portable_runner(workers=2) as engine:
        flags = ["--runner=beam", f"--beam_options={engine.beam_options}"]
        out["beam_portable_2"] = _steady("portable", dirs, tmp, flags, files, repeats)
    with local_engines.dask_cluster(2) as engine:
        flags = ["--runner=dask", f"--dask_scheduler={engine.address}"]
        out["dask_2"] = _steady("dask", dirs, tmp, flags, files, repeats)
    for name, timing in out.items():
        if isinstance(timing, dict):
            local = out[f"local_{name[-1]}"]
            timing["overhead_ms_per_file"] = (
                timing["steady_ms_per_file"] - local["steady_ms_per_file"]
            )
            timing["vs_local_same_workers"] = (
                local["steady_ms_per_file"] / timing["steady_ms_per_file"]
            )
    return out


def report(results: dict) -> None:
    print(f"engines, {results['files_n']} and {2 * results['files_n']} x 30 s files "
          f"({results['cpu']}); steady state, start-up cancelled:")  # fmt: skip
    names = {
        "local_1": "local pool, 1 worker",
        "local_2": "local pool, 2 workers",
        "beam_direct_2": "Beam DirectRunner, 2 workers",
        "beam_portable_2": "Beam portable runner, 2 SDK workers",
        "dask_2": "Dask, 2 workers",
    }
    for key, label in names.items():
        t = results[key]
        print(
            f"  {label:36s} {t['steady_files_per_s']:6.2f} files/s, "
            f"{t['overhead_ms_per_file']:+7.1f} ms/file vs the local pool "
            f"({t['vs_local_same_workers']:.2f}x), start-up {t['start_up_s']:.1f} s"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16, help="30 s clips")
    parser.add_argument("--copies", type=int, default=4, help="links per clip in N")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per timing; the best counts"
    )
    parser.add_argument("--output", default="", help="write results as JSON here")
    args = parser.parse_args()
    from extract_bench import make_clips

    tmp = tempfile.mkdtemp(prefix="extract_engines_")
    os.makedirs(os.path.join(tmp, "clips"))
    results = measure(
        make_clips(os.path.join(tmp, "clips"), args.clips), tmp, args.copies, args.repeats
    )
    report(results)
    if args.output:
        write_json(args.output, results)


if __name__ == "__main__":
    main()
