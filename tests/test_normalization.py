"""Track statistics in the records, the manifest's global statistics, and the
three normalizations (track, global, none) as the pipelines apply them."""

import csv
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, extract_corpus, run_bin

from m3bert_tf import runs, schema
from m3bert_tf.data import pipeline, records, shards
from m3bert_tf.features import audio, frames

ENV = {**os.environ, "PYTHONPATH": ROOT}


def all_records(shard_dir):
    return [
        ex for path in shards.list_shards(shard_dir) for ex in records.read_examples(path)
    ]


def raw_features(path):
    return frames.FeatureExtractor()(audio.load_audio(path))


def test_records_hold_track_statistics_that_give_back_the_raw_features(corpus_shards):
    examples = all_records(corpus_shards)
    assert all(ex[schema.TRACK_MEAN_KEY].shape == (324,) for ex in examples)
    checked = 0
    for ex in examples[:4]:
        raw = raw_features(ex[schema.SOURCE_PATH_KEY])
        np.testing.assert_allclose(
            ex[schema.TRACK_MEAN_KEY], raw.mean(0), rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(
            ex[schema.TRACK_STD_KEY], raw.std(0), rtol=1e-4, atol=1e-4
        )
        stored = ex[schema.FEATURES_KEY]
        rebuilt = stored * ex[schema.TRACK_STD_KEY] + ex[schema.TRACK_MEAN_KEY]
        start = ex[schema.CHUNK_INDEX_KEY] * 0  # one chunk per track of at most 20 s
        want = raw[start : start + len(stored)]
        # float16 keeps 11 significant bits of the normalized value, scaled back by std.
        tolerance = 2.0**-10 * (np.abs(stored) + 1e-3) * ex[schema.TRACK_STD_KEY] + 1e-4
        error = np.abs(rebuilt - want)
        assert np.all(error <= tolerance), float((error - tolerance).max())
        checked += 1
    print(f"raw features rebuilt from {checked} tracks within float16 tolerance")


def test_manifest_global_statistics_are_those_of_the_train_tracks(corpus_shards):
    manifest = json.load(open(os.path.join(corpus_shards, shards.MANIFEST_NAME)))
    stats = manifest["normalization_stats"]
    assert stats["split"] == "train"
    sources = {
        ex[schema.SOURCE_PATH_KEY]
        for ex in all_records(corpus_shards)
        if ex[schema.SPLIT_KEY] == "train"
    }
    everything = np.concatenate([raw_features(p) for p in sorted(sources)]).astype(
        np.float64
    )
    assert stats["frames"] == len(everything)
    np.testing.assert_allclose(stats["mean"], everything.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["std"], everything.std(0), rtol=1e-3, atol=1e-4)
    assert shards.normalization_stats(shards.read_manifests(corpus_shards))[
        "mean"
    ] == pytest.approx(stats["mean"])


@pytest.mark.parametrize("mode", ["track", "global", "none"])
def test_each_normalization_eagerly_and_in_map(corpus_shards, mode):
    stats = shards.normalization_stats(shards.read_manifests(corpus_shards))
    first = tf.data.TFRecordDataset(shards.list_shards(corpus_shards)[0]).take(3)
    mapped = first.map(
        lambda s: pipeline.normalized_features(records.parse_example(s), mode, stats)
    )
    for serialized, in_map in zip(first, mapped, strict=True):
        ex = records.parse_example(serialized)
        stored = ex[schema.FEATURES_KEY].numpy()
        raw = stored * ex[schema.TRACK_STD_KEY].numpy() + ex[schema.TRACK_MEAN_KEY].numpy()
        want = {
            "track": stored,
            "none": raw,
            "global": (raw - np.array(stats["mean"])) / np.maximum(stats["std"], 1e-5),
        }[mode]
        eager = pipeline.normalized_features(ex, mode, stats).numpy()
        np.testing.assert_allclose(eager, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(in_map.numpy(), want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="normalization 'global' needs statistics"):
        pipeline.normalized_features(ex, "global", None)


@pytest.fixture(scope="module")
def timbre_corpus(tmp_path_factory):
    """48 short tracks: enough for a linear probe of the lead instrument."""
    root = tmp_path_factory.mktemp("timbre")
    shard_dir = extract_corpus(root, num_tracks=48, min_duration=4.0, max_duration=6.0)
    with open(root / "corpus" / "metadata.csv") as f:
        instruments = {r["track_id"]: r["instrument"] for r in csv.DictReader(f)}
    return shard_dir, instruments


def clip_statistics(shard_dir, instruments, mode):
    """[tracks, 648] mean and std over time of the normalized features, and labels."""
    stats = shards.normalization_stats(shards.read_manifests(shard_dir))
    x, y = [], []
    for path in shards.list_shards(shard_dir):
        for serialized in tf.data.TFRecordDataset(path):
            ex = records.parse_example(serialized)
            features = pipeline.normalized_features(ex, mode, stats).numpy()
            x.append(np.concatenate([features.mean(0), features.std(0)]))
            y.append(instruments[ex[schema.TRACK_ID_KEY].numpy().decode()])
    return np.array(x), np.array(y)


def test_a_static_timbre_is_learned_under_global_normalization_not_under_track(
    timbre_corpus,
):
    """The lead instrument is constant over a track: per-track CMVN erases its
    spectrum (clip statistics are all 0 and 1), global normalization keeps it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = {}
    for mode in ("track", "global"):
        x, y = clip_statistics(*timbre_corpus, mode)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores[mode] = float(np.mean(cross_val_score(probe, x, y, cv=4)))
    print(f"instrument probe accuracy (chance 0.25): {scores}")
    assert scores["global"] >= 0.5
    assert scores["track"] <= 0.4


def test_pretraining_stores_global_statistics_and_finetuning_must_match(
    corpus_shards, tmp_path
):
    args = [
        f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={corpus_shards}",
        f"--model_dir={tmp_path / 'pre'}", "--train_steps=1", "--max_frames=32",
        "--eval_batches=1", "--normalization=global",
    ]  # fmt: skip
    res = subprocess.run(
        run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    stored = runs.read_input_spec(str(tmp_path / "pre"))
    assert stored["normalization"] == "global"
    assert stored["feature_spec"]["feature_set"] == "paper"
    assert stored["stats"]["mean"] == pytest.approx(
        shards.normalization_stats(shards.read_manifests(corpus_shards))["mean"]
    )
    args = [
        f"--pretrained={tmp_path / 'pre'}", f"--data={corpus_shards}",
        f"--model_dir={tmp_path / 'fine'}", "--train_steps=1", "--normalization=track",
    ]  # fmt: skip
    res = subprocess.run(
        run_bin("finetune", *args), env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "normalization=track" in res.stderr and "'global'" in res.stderr
    assert not (tmp_path / "fine").exists()
