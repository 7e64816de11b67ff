"""bin/evaluate (the probe protocol) and bin/correlate, on the example corpus."""

import csv
import os
import subprocess

import numpy as np
import soundfile
from conftest import run_bin, user_env

from m3bert_tf.evaluate import probe
from m3bert_tf.tasks import TaskSpec


def _split_data(rng, n, flip=False):
    """Two classes decided by x[:, 0]; `flip` labels them the other way round."""
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    return x, (1 - y) if flip else y


def test_the_probe_choice_follows_validation_not_test():
    """Validation labels that contradict train make a probe that learned
    nothing (learning rate 0) the best on valid: it must be chosen, although
    on test (labeled like train) the learning configuration is far better."""
    rng = np.random.default_rng(0)
    spec = TaskSpec("t", "classification", classes=("a", "b"))
    data = probe.ProbeData({}, {})
    for split, flip in (("train", False), ("valid", True), ("test", False)):
        data.x[split], data.y[split] = _split_data(rng, 200, flip)
    configs = (probe.HyperParams(0, 1e-2, 0.0), probe.HyperParams(0, 0.0, 0.0))
    chosen = probe.run_probe(spec, data, configs, seed=0, epochs=60)
    assert chosen.chosen == configs[1], chosen
    # The same grid on a validation split that agrees with test picks the learner.
    data.y["valid"] = 1 - data.y["valid"]
    agreeing = probe.run_probe(spec, data, configs, seed=0, epochs=60)
    assert agreeing.chosen == configs[0]
    print(f"\ntest accuracy, chosen by a contradicting valid: {chosen.test['accuracy']:.2f}; "
          f"by an agreeing valid: {agreeing.test['accuracy']:.2f}")  # fmt: skip
    assert agreeing.test["accuracy"] > 0.85 > chosen.test["accuracy"] + 0.3
    # Test labels never move the choice.
    data.y["test"] = rng.integers(0, 2, data.y["test"].shape).astype(np.float32)
    assert probe.run_probe(spec, data, configs, seed=0, epochs=60).chosen == configs[0]


def test_chunks_of_a_track_are_scored_as_one():
    matrix = probe.averaging(np.array(["b", "a", "b", "c"]), 4)
    predictions = np.array([[1.0], [5.0], [3.0], [7.0]])
    assert np.allclose(matrix @ predictions, [[2.0], [5.0], [7.0]])  # first-seen order
    spec = TaskSpec("g", "classification", classes=("x", "y", "z"))
    labels = np.array([[2.0], [1.0], [2.0], [0.0]])
    assert probe.group_labels(
        spec, labels, np.array(["b", "a", "b", "c"])
    ).ravel().tolist() == [2, 1, 0]


def _best(rows, name):
    return max(r["mean"]["score"] for r in rows if r["set"] == name)


def test_pretrained_encoder_beats_random_weights_and_every_set_beats_chance(
    pretrained_corpus, tmp_path
):
    from m3bert_tf.evaluate import job

    # An external embedding: a user's own vector per track (here: raw channel means
    # from the features), written as <track id>.npz.
    examples = np.load(next(iter(_examples_cache(tmp_path, pretrained_corpus))))
    external = tmp_path / "external"
    for track, x in zip(
        examples["track_ids"].astype(str), examples["baseline_features_mean"], strict=True
    ):
        path = external / f"{track}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, embedding=x)
    messages = []
    config = job.EvaluateConfig(
        data=pretrained_corpus["shards"], output_dir=str(tmp_path / "eval"),
        models=(f"tiny={pretrained_corpus['pretrained']}",),
        embeddings=(f"channel means={external}",), seeds=2, epochs=40,
    )  # fmt: skip
    result = job.run_evaluate(config, log=messages.append)
    tasks = result["tasks"]
    assert set(tasks) == {"genre", "instrument", "valence", "arousal"}
    names = {"M2BERT tiny", "random", "mfcc", "features", "channel means"}
    assert set(result["feature_sets"]) == names
    print()
    beats_random = 0
    for task, r in tasks.items():
        margins = {n: _best(r["rows"], n) - r["chance"] for n in sorted(names)}
        over_random = _best(r["rows"], "M2BERT tiny") - _best(r["rows"], "random")
        beats_random += over_random > 0
        print(f"{task:10s} over chance: " + ", ".join(f"{n} {m:+.3f}" for n, m in margins.items())
              + f"; tiny over random {over_random:+.3f}")  # fmt: skip
        assert all(m > 0 for m in margins.values()), (task, margins)
    assert beats_random >= 2
    for name in ("results.md", "results.json", "plot_genre.png", "plot_valence.png"):
        assert os.path.getsize(tmp_path / "eval" / name) > 0
    table = (tmp_path / "eval" / "results.md").read_text()
    assert "## genre (classification" in table and "| M2BERT tiny | mlp |" in table
    # Every score has its interval; each set is compared with the best baseline.
    for task, r in tasks.items():
        for row in r["rows"]:
            low, high = row["interval"]
            assert np.isfinite([low, high]).all() and low < high, (task, row["set"])
        against = {(c["a"], c["probe"]) for c in r["comparisons"]
                   if c["baseline"] and not c["added"]}  # fmt: skip
        assert against == {(n, p) for n in ("M2BERT tiny", "channel means")
                           for p in ("mlp", "linear")}  # fmt: skip
        # Each model, and the random control, joined to the raw baseline best on
        # valid, compared with that baseline alone.
        added = {(c["a"], c["b"]) for c in r["comparisons"] if c["added"]}
        assert added == {(f"{n} + {r['added_to']}", r["added_to"])
                         for n in ("M2BERT tiny", "channel means", "random")}  # fmt: skip
        assert r["added_to"] in ("mfcc", "features")
        for c in r["comparisons"]:
            assert c["resolved"] == (c["interval"][0] > 0 or c["interval"][1] < 0)
    assert "## Summary" in table and "resolved" in table

    # bin/evaluate with another probe setting reads every embedding from the cache.
    res = subprocess.run(
        run_bin("evaluate", f"--data={pretrained_corpus['shards']}",
                f"--models=tiny={pretrained_corpus['pretrained']}",
                f"--output_dir={tmp_path / 'eval'}", "--probes=linear", "--seeds=1",
                "--epochs=10", "--tasks=genre"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "embedding with" not in res.stderr + res.stdout
    assert res.stdout.count("from the cache") == 3  # examples, tiny, random
    assert "| M2BERT tiny | linear |" in res.stdout and "## instrument" not in res.stdout


def _examples_cache(tmp_path, corpus):
    """examples-<key>.npz for the corpus (the labels and input-feature statistics)."""
    from m3bert_tf.data import shards
    from m3bert_tf.evaluate import baselines, feature_sets

    files = shards.list_shards(corpus["shards"])
    sizes = {"genre": 1, "instrument": 1, "valence": 1, "arousal": 1}
    directory = str(tmp_path / "eval" / "embeddings")
    feature_sets.load_examples(
        files, sizes, directory, log=lambda m: None, raw_frames=baselines.raw_frames()
    )
    return [os.path.join(directory, n) for n in os.listdir(directory)]


def test_usage_errors_name_the_flag(tmp_path):
    res = subprocess.run(
        run_bin("evaluate", f"--data={tmp_path}", f"--output_dir={tmp_path / 'o'}",
                "--baselines=mfcc,vggish"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2 and "--baselines: unknown ['vggish']" in res.stderr


def test_correlate_finds_the_cell_that_follows_brightness(pretrained_corpus, tmp_path):
    """A tone whose brightness sweeps up over 12 s: some cell tracks the
    spectral centroid; the random-encoder and input-channel controls are there."""
    sr = 44100
    t = np.arange(12 * sr) / sr
    bright = np.linspace(0.0, 1.0, len(t))
    y = sum(
        np.exp(-k / (1 + 20 * bright)) * np.sin(2 * np.pi * 220.0 * k * t)
        for k in range(1, 40)
    )
    (tmp_path / "in").mkdir()
    soundfile.write(
        str(tmp_path / "in" / "sweep.wav"),
        (0.5 * y / np.abs(y).max()).astype(np.float32),
        sr,
    )
    # A 10-sample file and a silent one are skipped and not counted as used.
    soundfile.write(str(tmp_path / "in" / "tiny.wav"), np.full(10, 0.3, np.float32), sr)
    soundfile.write(str(tmp_path / "in" / "silent.wav"), np.zeros(sr, np.float32), sr)
    out = tmp_path / "out"
    res = subprocess.run(
        run_bin("correlate", f"--model={pretrained_corpus['pretrained']}",
                f"--input={tmp_path / 'in'}", f"--output_dir={out}", "--top=3"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    print("\n" + res.stdout)
    with open(out / "top_cells.csv") as f:
        rows = list(csv.DictReader(f))
    best = {
        (r["source"], r["descriptor"]): float(r["rho"]) for r in rows if r["rank"] == "1"
    }
    assert abs(best[("model", "spectral_centroid")]) > 0.8
    assert {s for s, _ in best} == {"model", "random", "input"}
    assert len(rows) == 3 * 9 * 3
    for name in ("spectral_centroid", "rms", "harmonic_ratio"):
        assert os.path.getsize(out / f"scatter_{name}.png") > 0
    report = (out / "correlations.md").read_text()
    assert "| spectral_centroid |" in report and "; 1 files," in report
    assert "Skipped 2 files" in report and "tiny.wav: too short" in report
    assert " of 1 files in " in res.stdout
    assert "Best |ρ| per encoder layer" in report and "\n| 1 | " in report
