"""bin/extract --runner=beam: Apache Beam's DirectRunner against the local pool."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_bin, user_env

# Not imported here: pyarrow (Beam's) loaded beside TensorFlow in one process
# can crash it; the jobs run in subprocesses.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("apache_beam") is None,
        reason="pip install -e '.[beam]'",
    ),
]


def test_the_beam_extra_keeps_tensorflow_installable():
    """Beam's protobuf range meets TensorFlow's on this line (on 2.17.1 it
    must stay below 5, on 2.21 Beam and TensorFlow agree on 6.x): `pip check`
    is clean and protobuf's runtime is one TensorFlow imports with."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from importlib import metadata

    import google.protobuf

    needed = [r for r in metadata.requires("tensorflow") if r.startswith("protobuf")]
    assert needed, "TensorFlow states its protobuf range"
    from packaging.requirements import Requirement

    assert Requirement(needed[0].split(";")[0]).specifier.contains(
        google.protobuf.__version__
    ), (needed[0], google.protobuf.__version__)


def _examples(shard_dir):
    """{(track id, chunk index): (features bytes, mean bytes, std bytes, split)}."""
    from m3bert_tf import schema
    from m3bert_tf.data import shards

    out = {}
    for path in shards.list_shards(shard_dir):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            f = tf.train.Example.FromString(record).features.feature
            key = (
                f[schema.TRACK_ID_KEY].bytes_list.value[0].decode(),
                f[schema.CHUNK_INDEX_KEY].int64_list.value[0],
            )
            assert key not in out, key
            out[key] = (
                f[schema.FEATURES_KEY].bytes_list.value[0],
                np.asarray(f[schema.TRACK_MEAN_KEY].float_list.value).tobytes(),
                np.asarray(f[schema.TRACK_STD_KEY].float_list.value).tobytes(),
            )
    return out


def test_beam_extraction_holds_the_local_pools_examples(tmp_path):
    from m3bert_tf.demo import corpus

    corpus.write_example_corpus(
        str(tmp_path / "corpus"), num_tracks=10, min_duration=6.0, max_duration=70.0
    )
    (tmp_path / "corpus" / "audio" / "broken.wav").write_bytes(b"RIFF not audio")
    manifests = {}
    for runner in ("local", "beam"):
        res = subprocess.run(
            run_bin("extract", f"--input={tmp_path / 'corpus' / 'audio'}",
                    f"--output_dir={tmp_path / runner}", f"--runner={runner}",
                    "--num_workers=1", "--shard_size=3"),
            env=user_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert res.returncode == 1, res.stderr[-3000:]  # one file failed
        assert "broken.wav" in res.stderr + res.stdout
        manifests[runner] = json.load(open(tmp_path / runner / "manifest.json"))
        assert not os.path.exists(tmp_path / runner / "beam-staging")

    local, beam = _examples(str(tmp_path / "local")), _examples(str(tmp_path / "beam"))
    assert len(local) > 10 and local == beam  # some tracks have several chunks
    for key in ("tracks", "chunks", "frames", "failures"):
        assert manifests["beam"]["counts"][key] == manifests["local"]["counts"][key], key
    assert [f["path"] for f in manifests["beam"]["failures"]] == [
        f["path"] for f in manifests["local"]["failures"]
    ]
    stats = [manifests[r]["normalization_stats"] for r in ("local", "beam")]
    np.testing.assert_allclose(stats[0]["mean"], stats[1]["mean"], rtol=1e-6)
    np.testing.assert_allclose(stats[0]["std"], stats[1]["std"], rtol=1e-6)

    # Our indexes agree with the shards Beam wrote (what training counts by).
    from m3bert_tf.data import pipeline, shards

    files = shards.list_shards(str(tmp_path / "beam"))
    counted = pipeline.training_counts(files, 0)
    read = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
    assert counted == read
    rerun = subprocess.run(
        run_bin("extract", f"--input={tmp_path / 'corpus' / 'audio'}",
                f"--output_dir={tmp_path / 'beam'}", "--runner=beam", "--num_workers=1"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert "0 to do" in rerun.stderr and _examples(str(tmp_path / "beam")) == beam
