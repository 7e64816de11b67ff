"""librosa's numba kernels: compiled once, by the parent, into our cache; a
cache that does not load is removed and compiled again."""

import os
import subprocess
import sys

from conftest import ROOT, run_bin, user_env, write_audio

COMPILING = "compiling librosa's numba kernels once"
# The naive reference path of benchmarks/extract_bench.py: the kernel
# (piptrack's _parabolic_interpolation) that two racing workers once poisoned.
NAIVE = (
    "import numpy as np, librosa\n"
    "y = np.random.default_rng(0).standard_normal(44100 * 3).astype(np.float32)\n"
    "print('tuning', librosa.estimate_tuning(y=y, sr=44100))\n"
)


def cache_files(directory):
    return sorted(
        (
            os.path.relpath(os.path.join(d, n), directory),
            os.path.getmtime(os.path.join(d, n)),
        )
        for d, _, names in os.walk(directory)
        for n in names
        if n.endswith((".nbi", ".nbc"))
    )


def test_two_workers_on_a_fresh_cache_compile_once_and_poison_nothing(tmp_path):
    env = {**user_env(), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        write_audio(str(music / f"{i}.wav"), 2.0, 22050, seed=i)
    runs = []
    for out in ("a", "b"):  # the second job: everything cached, nothing written
        runs.append(subprocess.run(
            run_bin("extract", f"--input={music}", f"--output_dir={tmp_path / out}",
                    "--num_workers=2"),
            env=env, capture_output=True, text=True, timeout=600,
        ))  # fmt: skip
        assert runs[-1].returncode == 0, runs[-1].stderr[-3000:]
        if out == "a":
            compiled = cache_files(tmp_path / "numba")
    assert runs[0].stderr.count(COMPILING) == 1 and COMPILING not in runs[1].stderr
    assert compiled and cache_files(tmp_path / "numba") == compiled
    # Checked once: a later job's parent reads the stamp and starts no child
    # (it did, 2.5 s per job, while the stamp counted its own temporary file).
    again = subprocess.run(
        [sys.executable, "-c", "from m3bert_tf.features import kernels; "
         "print(kernels.ensure_compiled())"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.stdout.split()[-1] == "False", again.stderr[-2000:]
    naive = subprocess.run([sys.executable, "-c", NAIVE], env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert naive.returncode == 0 and "tuning" in naive.stdout, naive.stderr[-3000:]


def test_a_cache_that_does_not_load_is_removed_and_compiled_again(tmp_path):
    env = {**user_env(), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    warm = [
        sys.executable,
        "-c",
        "from m3bert_tf.features.kernels import ensure_compiled; ensure_compiled()",
    ]
    first = subprocess.run(warm, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and COMPILING in first.stderr, first.stderr[-3000:]
    for name, _ in cache_files(tmp_path / "numba"):
        if name.endswith(".nbc"):  # what a half-written file looks like to a reader
            with open(tmp_path / "numba" / name, "r+b") as f:
                f.truncate(100)
    broken = subprocess.run([sys.executable, "-c", NAIVE], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert broken.returncode != 0  # what a user met: every later call fails
    again = subprocess.run(warm, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "does not load" in again.stderr and "removed, compiling it again" in again.stderr
    naive = subprocess.run([sys.executable, "-c", NAIVE], env=env, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert naive.returncode == 0, naive.stderr[-3000:]


def test_the_cache_is_ours_unless_the_user_names_one():
    code = "import os, m3bert_tf; print(os.environ['NUMBA_CACHE_DIR'])"
    env = {k: v for k, v in user_env().items() if k != "NUMBA_CACHE_DIR"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert os.path.join("m3bert_tf", "numba", "py") in ours.stdout
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "NUMBA_CACHE_DIR": "/somewhere"}, cwd=ROOT)  # fmt: skip
    assert theirs.stdout.strip() == "/somewhere"
