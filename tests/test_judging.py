"""Judging like with like (evaluate/pooling.py, comparisons.py, probe_linear.py,
the learning curve): equal pooling, added-value rows, probes that cannot do
much worse than the audio-blind predictor, and curves from snapshots."""

import numpy as np
import pytest

from m3bert_tf.evaluate import feature_sets, job, pooling, probe
from m3bert_tf.tasks import TaskSpec

TWO = TaskSpec("g", "classification", classes=("a", "b"))


def _split(n):
    return np.array(["train", "train", "train", "valid", "test"])[np.arange(n) % 5]


def _probe_data(x, y, splits):
    return probe.ProbeData(
        {s: x[splits == s] for s in ("train", "valid", "test")},
        {s: y[splits == s] for s in ("train", "valid", "test")},
    )


def test_a_signal_in_the_frames_spread_is_found_alike_through_windows_and_whole_frames():
    """Two classes with the same mean frame, told apart by how much the frames
    move: pooled by the mean a probe sees nothing; by mean and std it finds
    them, with the same statistics whether the frames came window by window
    (the model path, `Accumulator`) or whole (the raw path)."""
    rng = np.random.default_rng(0)
    n, frames, width = 200, 90, 6
    y = rng.integers(0, 2, n)
    clips = [rng.normal(size=(frames, width)) * (1.0 + 1.5 * label) for label in y]
    whole = {
        k: np.stack([pooling.frame_statistics(c)[k] for c in clips])
        for k in ("mean", "std", "max")
    }
    accumulator = pooling.Accumulator()
    for owner, clip in enumerate(clips):
        for start in range(0, frames, 32):  # windows of 32 frames, a last one of 26
            accumulator.add(owner, clip[start : start + 32])
    windowed = accumulator.result()
    for key in pooling.STATISTICS:
        np.testing.assert_allclose(windowed[key], whole[key], rtol=1e-5, atol=1e-6)
    labels = y[:, None].astype(np.float32)
    scores = {}
    for name, stats in (("windowed", windowed), ("whole", whole)):
        for how in ("mean", "mean+std"):
            x = pooling.pool(stats, how)
            assert x.shape == (n, width * len(pooling.POOLINGS[how]))
            result = probe.run_probe(
                TWO, _probe_data(x, labels, _split(n)), probe.LINEAR_GRID
            )
            scores[name, how] = result.test["accuracy"]
    print(scores)
    assert scores["windowed", "mean"] == scores["whole", "mean"] < 0.75
    assert scores["windowed", "mean+std"] == scores["whole", "mean+std"] > 0.95
    with pytest.raises(ValueError, match="pooling: use one of"):
        pooling.pool(whole, "median")


def _task(x_model, x_base, y, spec, probes=("linear",)):
    """`job._probe_task` on a model set and a raw baseline (its added-value row
    made by the job), on 5 splits of the clips: one track each."""
    n = len(y)
    examples = feature_sets.Examples(
        np.array([f"t{i}" for i in range(n)]), _split(n),
        {spec.name: y[:, None].astype(np.float32)}, {spec.name: np.ones(n, bool)}, {},
    )  # fmt: skip
    sets = [
        feature_sets.FeatureSet("M2BERT m", x_model, pooling="mean+std"),
        feature_sets.FeatureSet("features", x_base, pooling="mean+std", kind="baseline"),
    ]
    config = job.EvaluateConfig(
        data="-", output_dir="-", baselines=("features",), probes=probes, seeds=1
    )
    return job._probe_task(config, spec, examples, sets, lambda done: None)


def test_the_added_value_row_resolves_what_a_model_adds_and_only_that():
    """Four classes made of two bits: the baseline carries one, a useful model
    the other. Joined to the baseline, the useful model's row beats the
    baseline alone, resolved; a model of pure noise joined to it does not."""
    rng = np.random.default_rng(1)
    n = 500
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = 2 * a + b
    spec = TaskSpec("quad", "classification", classes=("00", "01", "10", "11"))
    base = rng.normal(size=(n, 20)).astype(np.float32)
    base[:, 0] += 4.0 * a
    useful = rng.normal(size=(n, 16)).astype(np.float32)
    useful[:, 0] += 4.0 * b
    noise = rng.normal(size=(n, 16)).astype(np.float32)
    for model, expect in ((useful, True), (noise, False)):
        r = _task(model, base, y, spec)
        assert r["added_to"] == "features"
        (added,) = [c for c in r["comparisons"] if c["added"]]
        assert (added["a"], added["b"]) == ("M2BERT m + features", "features")
        rows = {row["set"]: row for row in r["rows"]}
        assert rows["M2BERT m + features"]["dim"] == model.shape[1] + 20
        assert rows["M2BERT m + features"]["kind"] == "added"
        print(f"adds {added['difference']:+.3f} {added['interval']}")
        assert added["resolved"] is expect, added
        if expect:
            assert added["difference"] > 0.3


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_probe_of_pure_noise_is_not_far_below_the_audio_blind_predictor(kind):
    """Noise of 24 dims, 32 training clips, 16 validation clips: the
    probe chosen on validation scores a test R² within noise of 0 (the
    training mean's) and an accuracy within noise of chance, on every seed."""
    regression = TaskSpec("v", "regression", outputs=("v",))
    classes = TaskSpec("g", "classification", classes=tuple("abcd"))
    r2, accuracy = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        sizes = {"train": 32, "valid": 16, "test": 48}
        for spec, out in ((regression, r2), (classes, accuracy)):
            data = probe.ProbeData({}, {})
            for split, size in sizes.items():
                data.x[split] = rng.normal(size=(size, 24)).astype(np.float32)
                data.y[split] = (
                    rng.normal(size=(size, 1)) if spec is regression
                    else rng.integers(0, 4, (size, 1))
                ).astype(np.float32)  # fmt: skip
            result = probe.run_probe(spec, data, probe.GRIDS[kind], seed, epochs=40)
            out.append(result.test["score"])
    print(f"{kind}: R² {np.round(r2, 3)}, accuracy {np.round(accuracy, 3)}")
    # The training mean of 32 draws misses the test mean by about 0.18 std: an
    # R² of about -0.03 on average, worse on some seeds; least squares on 24
    # dims fitted to 32 clips scores far below (the weak penalties alone:
    # tested below).
    assert np.mean(r2) > -0.15 and min(r2) > -0.45
    assert abs(np.mean(accuracy) - 0.25) < 0.08


def test_without_the_strong_penalties_the_same_noise_scores_far_below_the_mean():
    """The control for the test above: a grid of weak penalties alone (what
    bin/evaluate had) overfits the same noise, so that test can fail."""
    regression = TaskSpec("v", "regression", outputs=("v",))
    weak = tuple(c for c in probe.LINEAR_GRID if c.l2 <= 1e-3)
    r2 = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        data = probe.ProbeData(
            {s: rng.normal(size=(n, 24)).astype(np.float32)
             for s, n in (("train", 32), ("valid", 16), ("test", 48))},
            {s: rng.normal(size=(n, 1)).astype(np.float32)
             for s, n in (("train", 32), ("valid", 16), ("test", 48))},
        )  # fmt: skip
        r2.append(probe.run_probe(regression, data, weak).test["score"])
    assert np.mean(r2) < -0.3, r2


def test_the_linear_probe_is_solved_and_falls_back_to_the_mean():
    """The strongest penalty of the grid leaves the training mean (regression)
    and the class prior (classification): the audio-blind predictors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 30)).astype(np.float32)
    splits = np.array(["train"] * 40 + ["valid"] * 10 + ["test"] * 10)
    y = (x[:, :1] * 0.1 + 5.0).astype(np.float32)
    strongest = (max(probe.LINEAR_GRID, key=lambda c: c.l2),)
    regression = TaskSpec("v", "regression", outputs=("v",))
    result = probe.run_probe(regression, _probe_data(x, y, splits), strongest)
    # within 5 % of the target std (0.1) of the training mean; the signal is 100 %
    np.testing.assert_allclose(result.test_predictions, y[:40].mean(), atol=5e-3)
    labels = (np.arange(60) % 4 == 0).astype(np.float32)[:, None]  # a 25 % class
    result = probe.run_probe(TWO, _probe_data(x, labels, splits), strongest)
    assert np.all(result.test_predictions.argmax(1) == 0)  # the majority class
    np.testing.assert_allclose(result.test_predictions[:, 1], labels[:40].mean(), atol=0.01)
    assert result.chosen.solved and result.epoch == 0


def test_a_learning_curve_from_three_snapshots_of_a_tiny_run(tmp_path):
    from conftest import extract_labeled

    from m3bert_tf import runs
    from m3bert_tf.train import configs, pretrain

    data = extract_labeled(
        tmp_path, [(f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2])
                   for i in range(18)]
    )  # fmt: skip
    run = str(tmp_path / "run")
    model = configs.ModelConfig(num_layers=1, hidden_dim=16, num_heads=2, ffn_dim=32)
    pretrain.run_pretrain(
        configs.PretrainConfig(
            data=data, model_dir=run, model=model, train_steps=3, global_batch_size=2,
            max_frames=32, snapshot_every=1, eval_every=0, eval_batches=1, log_every=1,
            holdout_percent=0,
        ),
        log=lambda m: None,
    )  # fmt: skip
    assert runs.snapshot_steps(run) == [1, 2, 3]
    # The last snapshot is the run's final encoder, byte for byte in its weights.
    assert runs.model_digest(f"{run}@3") != runs.model_digest(f"{run}@1")
    config = job.EvaluateConfig(
        data=data, output_dir=str(tmp_path / "eval"), models=(f"tiny={run}@every",),
        baselines=("mfcc",), probes=("linear",), seeds=1,
    )  # fmt: skip
    result = job.run_evaluate(config, log=lambda m: None)
    rows = result["tasks"]["genre"]["rows"]
    curve = sorted((r["step"], r["set"]) for r in rows if r.get("curve") == "tiny")
    assert curve == [(s, f"M2BERT tiny@{s}") for s in (1, 2, 3)]
    assert (tmp_path / "eval" / "curve_genre.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="kept: 1, 2, 3"):
        runs.load_encoder(run, 7)
    # A directory whose name holds "@" is a directory, not a step.
    assert runs.at_step(f"{run}@v2") == (f"{run}@v2", None)


def test_a_model_fine_tuned_on_the_evaluated_shards_is_recognized_by_their_content(
    tmp_path,
):
    """Under --folds such a model's M3BERT row would be tested on tracks whose
    labels it learned: `tuned_on` finds it by the shards' digests, wherever
    the shards were copied; shards of other tracks are not confused with them."""
    import shutil
    import types

    from conftest import extract_labeled

    from m3bert_tf.data import shards
    from m3bert_tf.evaluate import model_sets

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows = [
        (f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2]) for i in range(6)
    ]
    data = extract_labeled(tmp_path / "a", rows)
    other = extract_labeled(tmp_path / "b", [(f"h{i}", *r[1:]) for i, r in enumerate(rows)])
    copy = str(tmp_path / "copy")
    shutil.copytree(data, copy)
    model = types.SimpleNamespace(info={"config": {"data": copy}})
    assert model_sets.tuned_on(model, shards.read_manifests(data))
    assert not model_sets.tuned_on(model, shards.read_manifests(other))
    gone = types.SimpleNamespace(info={"config": {"data": str(tmp_path / "gone")}})
    assert not model_sets.tuned_on(gone, shards.read_manifests(data))
