"""The extractor's filter banks: built with librosa once, kept on disk under a
key of what they are made from, read by workers that never import librosa."""

import os
import shutil
import subprocess
import sys

import librosa
import numpy as np
import pytest
from conftest import ROOT, music_like, user_env

from m3bert_tf import schema
from m3bert_tf.features import banks
from m3bert_tf.features.config import FeatureConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_bank_is_librosa_filters_stored_and_read_back(cache):
    config = FeatureConfig()
    built = banks.load(config)
    assert os.path.exists(banks.cache_path(config))
    np.testing.assert_array_equal(
        built["mel"],
        librosa.filters.mel(sr=schema.SAMPLE_RATE, n_fft=schema.N_FFT, n_mels=128),
    )
    np.testing.assert_array_equal(
        built["chroma"],
        librosa.filters.chroma(sr=schema.SAMPLE_RATE, n_fft=schema.N_FFT, tuning=0.0),
    )
    read = banks.load(config)
    assert set(read) == set(built)
    for name in built:
        np.testing.assert_array_equal(read[name], built[name], err_msg=name)


def test_key_follows_what_the_bank_is_made_from(cache, tmp_path, monkeypatch):
    paper = banks.cache_key(FeatureConfig())
    assert banks.cache_key(FeatureConfig(tuning=0.1)) != paper
    assert banks.cache_key(FeatureConfig(feature_set="authors")) != paper
    tuned = banks.load(FeatureConfig(tuning=0.5))
    assert not np.array_equal(tuned["chroma"], banks.load(FeatureConfig())["chroma"])
    # So are librosa's version and the code that builds the banks.
    with monkeypatch.context() as patch:
        patch.setattr(banks.metadata, "version", lambda package: "0.0.0")
        assert banks.cache_key(FeatureConfig()) != paper
    edited = tmp_path / "banks.py"
    shutil.copy(banks.__file__, edited)
    with open(edited, "a") as f:
        f.write("\n# an edit\n")
    monkeypatch.setattr(banks, "__file__", str(edited))
    assert banks.cache_key(FeatureConfig()) != paper


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_or_foreign_cache_file_is_built_again(cache, damage):
    config = FeatureConfig()
    want = banks.load(config)
    path = banks.cache_path(config)
    if damage == "truncated":  # a writer killed mid-file (before the rename)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:  # another config's bank under this name
        other = FeatureConfig(tuning=0.5)
        banks.ensure(other)
        shutil.copy(banks.cache_path(other), path)
    got = banks.load(config)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert str(np.load(path)["key"]) == banks.cache_key(config)


def test_a_worker_featurizes_without_importing_librosa(cache, tmp_path):
    """What the workers' start-up saves: librosa, scipy.signal and numba are
    never imported once the bank is cached (0.7 s of every worker's boot)."""
    banks.ensure(FeatureConfig())
    path = str(tmp_path / "a.wav")
    import soundfile

    soundfile.write(path, music_like(3.0, 48000, seed=1), 48000)
    code = (
        "import sys\n"
        "from m3bert_tf.extract import encode\n"
        "from m3bert_tf.datasets.base import Track\n"
        "from m3bert_tf.features.frames import FeatureExtractor\n"
        f"done = encode.featurize_track(Track({path!r}, 't'), FeatureExtractor())\n"
        "print(done.num_frames, sorted(m for m in ('librosa', 'scipy.signal', 'numba')"
        " if m in sys.modules))\n"
    )
    env = {**user_env(), "XDG_CACHE_HOME": str(cache), "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[0] == f"{1 + 3 * 44100 // schema.HOP_LENGTH} []"


def test_an_unwritable_cache_still_gives_the_bank(cache):
    cache.write_text(
        "a file where the cache directory would go"
    )  # unwritable, even for root
    said = []
    got = banks.load(FeatureConfig(), log=said.append)
    assert got["mel"].shape == (128, 1 + schema.N_FFT // 2)
    assert said and "cannot cache the feature filter banks" in said[-1]
