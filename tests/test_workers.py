"""What a featurizing worker sets up (`features.workers`): one BLAS thread,
and freed memory kept for the next file, measured in a fresh process by the
page faults a second file costs."""

import subprocess
import sys

import pytest
from conftest import ROOT, user_env, write_audio

FAULTS = """
import resource, sys
from m3bert_tf.datasets.base import Track
from m3bert_tf.extract import encode
from m3bert_tf.features import workers
from m3bert_tf.features.frames import FeatureExtractor

extractor = FeatureExtractor()
if sys.argv[1] == "configured":
    workers.configure()
from threadpoolctl import threadpool_info

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

encode.featurize_track(Track(sys.argv[2], "a"), extractor)  # the first file grows the heap
before = faults()
encode.featurize_track(Track(sys.argv[2], "b"), extractor)
print(faults() - before, max(p["num_threads"] for p in threadpool_info()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_configured_worker_reuses_memory_and_runs_one_blas_thread(tmp_path):
    path = str(tmp_path / "clip.wav")
    write_audio(path, 20.0, 48000, seed=1)
    out = {}
    for mode in ("configured", "default"):
        proc = subprocess.run(
            [sys.executable, "-c", FAULTS, mode, path], env={**user_env(), "PYTHONPATH": ROOT},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        faults, threads = map(int, proc.stdout.split())
        out[mode] = faults
        if mode == "configured":
            assert threads == 1
    print(f"page faults of a second 20 s file: {out}")
    # A 20 s clip's arrays are ~70 MB: thousands of pages when glibc gives
    # them back between files, next to none when they are kept.
    assert out["configured"] < 200 < 1000 < out["default"], out
