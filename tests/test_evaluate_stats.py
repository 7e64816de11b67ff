"""Intervals and paired comparisons (evaluate/bootstrap.py): coverage, power,
the false-positive rate, and units that are tracks."""

import numpy as np
import pytest

from m3bert_tf.evaluate import bootstrap, probe
from m3bert_tf.tasks import TaskSpec
from m3bert_tf.tasks.metrics import score_task

GENRE = TaskSpec("genre", "classification", classes=("a", "b"))


def predictions_with_accuracy(labels, accuracy, rng):
    """[n, 2] probabilities whose argmax is right for a Bernoulli(accuracy) share."""
    right = rng.random(len(labels)) < accuracy
    predicted = np.where(right, labels[:, 0], 1 - labels[:, 0]).astype(int)
    return np.eye(2)[predicted] * 0.8 + 0.1


def test_the_identity_resample_gives_each_metric():
    rng = np.random.default_rng(0)
    specs = [
        (GENRE, rng.integers(0, 2, (40, 1)).astype(float), rng.random((40, 2))),
        (TaskSpec("mood", "regression", outputs=("v", "a")), rng.normal(size=(40, 2)),
         rng.normal(size=(40, 2))),
        (TaskSpec("tags", "multilabel", classes=("p", "q", "r")),
         rng.integers(0, 2, (40, 3)).astype(float), rng.random((40, 3))),
    ]  # fmt: skip
    for spec, labels, predictions in specs:
        got = bootstrap.resampled_scores(spec, labels, [predictions], np.arange(40)[None])
        assert got[0] == pytest.approx(score_task(spec, labels, predictions)["score"])


def test_intervals_cover_a_known_difference_and_find_it():
    """A at 0.8 and B at 0.5 accuracy on 100 tracks: the paired interval holds
    the true 0.3 in about 95 % of repetitions, and the difference is found."""
    covered, found = 0, 0
    for repetition in range(200):
        rng = np.random.default_rng(repetition)
        labels = rng.integers(0, 2, (100, 1)).astype(float)
        a = predictions_with_accuracy(labels, 0.8, rng)
        b = predictions_with_accuracy(labels, 0.5, rng)
        indices = bootstrap.resample_indices(100, 500, seed=repetition)
        sa = bootstrap.resampled_scores(GENRE, labels, [a], indices)
        sb = bootstrap.resampled_scores(GENRE, labels, [b], indices)
        point = [bootstrap.resampled_scores(GENRE, labels, [p], np.arange(100)[None])[0]
                 for p in (a, b)]  # fmt: skip
        c = bootstrap.compare(sa, sb, *point)
        covered += c["interval"][0] <= 0.3 <= c["interval"][1]
        found += c["resolved"] and c["p"] < 0.05
    assert 0.88 <= covered / 200 <= 0.99, covered
    assert found / 200 > 0.95


def test_no_difference_is_found_at_the_nominal_rate():
    """Two sets of the same accuracy (independent errors): the one-sided
    p < 0.05 in about 5 % of repetitions; two copies of one set never."""
    false = 0
    for repetition in range(300):
        rng = np.random.default_rng(1000 + repetition)
        labels = rng.integers(0, 2, (80, 1)).astype(float)
        a = predictions_with_accuracy(labels, 0.7, rng)
        b = predictions_with_accuracy(labels, 0.7, rng)
        indices = bootstrap.resample_indices(80, 400, seed=repetition)
        sa, sb = (bootstrap.resampled_scores(GENRE, labels, [p], indices) for p in (a, b))
        false += bootstrap.compare(sa, sb, sa.mean(), sb.mean())["p"] < 0.05
        same = bootstrap.compare(sa, sa.copy(), sa.mean(), sa.mean())
        assert not same["resolved"] and same["p"] == 1.0
    assert false / 300 <= 0.09, false


def test_seeds_narrow_nothing_they_do_not_have():
    """The seeds are averaged per resample: one seed repeated three times
    gives the one seed's interval."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (50, 1)).astype(float)
    a = predictions_with_accuracy(labels, 0.7, rng)
    indices = bootstrap.resample_indices(50, 300)
    one = bootstrap.resampled_scores(GENRE, labels, [a], indices)
    three = bootstrap.resampled_scores(GENRE, labels, [a, a, a], indices)
    np.testing.assert_allclose(one, three)


def test_the_units_are_tracks_when_chunks_are_scored_per_track():
    rng = np.random.default_rng(0)
    tracks = np.repeat(np.arange(30), 4)  # 30 tracks of 4 chunks
    labels = (tracks % 2).astype(np.float32)[:, None]
    x = rng.normal(size=(120, 5)).astype(np.float32) + labels
    data = probe.ProbeData(
        {s: x for s in ("train", "valid", "test")},
        {s: labels for s in ("train", "valid", "test")},
        {s: tracks for s in ("train", "valid", "test")},
    )
    result = probe.run_probe(GENRE, data, probe.GRIDS["linear"], 0, epochs=5)
    assert result.test_labels.shape == (30, 1) and result.test_predictions.shape == (30, 2)
    assert result.test["examples"] == 30


def test_folds_never_split_a_track_test_each_once_and_stratify():
    from types import SimpleNamespace

    from m3bert_tf.evaluate import folds

    rng = np.random.default_rng(0)
    tracks = np.repeat([f"t{i}" for i in range(40)], 3)  # 40 tracks of 3 chunks
    classes = np.repeat(rng.integers(0, 4, 40), 3)
    has = np.ones(120, bool)
    has[:6] = False  # two tracks not labeled for the task
    examples = SimpleNamespace(
        track_ids=tracks,
        has={"genre": has},
        labels={"genre": classes[:, None].astype(float)},
    )
    spec = TaskSpec("genre", "classification", classes=("a", "b", "c", "d"))
    parts = folds.partitions(examples, "genre", spec, 5)
    assert len(parts) == 5
    tested = np.zeros(120, int)
    for f, splits in enumerate(parts):
        assert set(splits[:6]) == {""}  # unlabeled: in no split
        for t in set(tracks):
            assert len(set(splits[tracks == t])) == 1, (f, t)  # a track is never split
        tested += splits == "test"
        assert {"train", "valid", "test"} <= set(splits)
        for c in range(4):  # each class in each test fold as far as its count allows
            count = len(set(tracks[has & (classes == c)]))
            in_fold = len(set(tracks[(splits == "test") & (classes == c)]))
            assert abs(in_fold - count / 5) <= 1
    assert (tested[6:] == 1).all()
    with pytest.raises(ValueError, match="cannot fill 50 folds"):
        folds.partitions(examples, "genre", spec, 50)


def test_evaluate_with_folds_tests_every_track_once(tmp_path, monkeypatch):
    """Also: a baseline registered from here (one `Baseline` row) is a row of
    the tables, computed from the examples' raw frames."""
    from conftest import extract_labeled

    from m3bert_tf.evaluate import baselines, job

    data = extract_labeled(
        tmp_path, [(f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2])
                   for i in range(18)]
    )  # fmt: skip
    monkeypatch.setitem(baselines.BASELINES, "loudest", baselines.Baseline(
        "loudest", "the magnitude of each raw channel", frames=np.abs,
    ))  # fmt: skip
    config = job.EvaluateConfig(
        data=data, output_dir=str(tmp_path / "eval"), baselines=("mfcc", "features", "loudest"),
        probes=("linear",), seeds=2, epochs=5, folds=3,
    )  # fmt: skip
    result = job.run_evaluate(config, log=lambda m: None)
    assert result["feature_sets"]["loudest"] == "the magnitude of each raw channel"
    rows = {row["set"]: row for row in result["tasks"]["genre"]["rows"]}
    # Pooled like every set (mean+std by default): 2 x 324 and 2 x 20.
    assert rows["loudest"]["dim"] == 648 and rows["mfcc"]["dim"] == 40
    genre = result["tasks"]["genre"]
    assert genre["test_examples"] == 18 and genre["folds"] == 3
    assert sorted((s["seed"], s["fold"]) for s in genre["rows"][0]["seeds"]) == [
        (seed, fold) for seed in (0, 1) for fold in (0, 1, 2)
    ]
    assert "every one tested once over 3 folds" in result["markdown"]
    with pytest.raises(ValueError, match="folds must be 0"):
        job.EvaluateConfig(data="d", output_dir="o", baselines=("mfcc",), folds=2)


def test_the_layer_weights_prefer_a_planted_informative_layer():
    """[n, 4, D] embeddings where only layer 2 carries the class: the probe's
    learned softmax weights put most of their mass there, and it scores."""
    rng = np.random.default_rng(0)
    n, d = 300, 8
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4, d)).astype(np.float32)
    x[:, 2, 0] += 3.0 * labels  # the informative layer
    y = labels[:, None].astype(np.float32)
    splits = {"train": slice(0, 200), "valid": slice(200, 250), "test": slice(250, 300)}
    data = probe.ProbeData(
        {s: x[r] for s, r in splits.items()}, {s: y[r] for s, r in splits.items()}
    )
    weakest = [c for c in probe.GRIDS["mlp"] if c.l2 == min(probe.MLP_L2)][:2]
    for grid in (probe.GRIDS["linear"], weakest):
        result = probe.run_probe(GENRE, data, grid, 0, epochs=30)
        weights = result.layer_weights
        assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0, abs=1e-5)
        print(weights)
        assert np.argmax(weights) == 2 and weights[2] > 0.5, weights
        assert result.test["accuracy"] > 0.85


def test_layer_all_probes_every_block_their_mean_and_weighted_sum(tmp_path):
    from conftest import extract_labeled, make_run

    from m3bert_tf.evaluate import job

    data = extract_labeled(
        tmp_path, [(f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2])
                   for i in range(18)]
    )  # fmt: skip
    run = make_run(tmp_path / "run", "pretrained")
    config = job.EvaluateConfig(
        data=data, output_dir=str(tmp_path / "eval"), models=(f"tiny={run}",),
        baselines=("mfcc", "random"), probes=("linear",), seeds=1, epochs=5, layer="all",
    )  # fmt: skip
    result = job.run_evaluate(config, log=lambda m: None)
    rows = {row["set"]: row for row in result["tasks"]["genre"]["rows"]}
    profile = [f"M2BERT tiny {x}" for x in ("L0", "L1", "mean", "weighted")]
    assert set(profile) <= set(rows) and "random" in rows
    weights = rows["M2BERT tiny weighted"]["layer_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "eval" / "layers_genre.png").stat().st_size > 0
    compared = {(c["a"], c["b"]) for c in result["tasks"]["genre"]["comparisons"]}
    best = max(("mfcc", "random"), key=lambda b: rows[b]["mean"]["score"])
    assert {(name, best) for name in profile} <= compared  # each against the best baseline
    assert not any(a in profile and b in profile for a, b in compared)
    assert (
        "Learned layer weights of M2BERT tiny weighted (linear): L0 " in result["markdown"]
    )
