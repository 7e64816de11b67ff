"""Multi-task fine-tuning: mixing, masked heads, freezing, metrics, the job."""

import collections
import glob
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, kill_after_checkpoints, run_bin

from m3bert_tf import runs
from m3bert_tf.data import records, shards, windows
from m3bert_tf.models.encoder import M3BertEncoder
from m3bert_tf.runs import example_cache
from m3bert_tf.tasks import TaskSpec, mixing_probabilities, read_task_info
from m3bert_tf.tasks.metrics import chance_score, score_task
from m3bert_tf.train import finetune
from m3bert_tf.train.batches import CachedBatches

ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_mixing_probabilities_follow_the_temperature():
    sizes = {"a": 100, "b": 25, "c": 0}
    assert mixing_probabilities(sizes, 1.0) == pytest.approx({"a": 0.8, "b": 0.2, "c": 0.0})
    assert mixing_probabilities(sizes, 0.0) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0})
    assert mixing_probabilities(sizes, 0.5) == pytest.approx(
        {"a": 10 / 15, "b": 5 / 15, "c": 0.0}
    )


def features_cache(data, directory, encoder=None, window=256):
    specs, _ = read_task_info(shards.read_manifests(data))
    source = example_cache.CacheSource(
        data=data, label_sizes={t: specs[t].size for t in sorted(specs)},
        normalization="track", stats=None, encoder=encoder, window=window,
    )  # fmt: skip
    messages = []
    cache = example_cache.open_cache(str(directory), source, messages.append)
    return cache, sorted(specs), messages


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_batches_mix_tasks_as_the_formula_says(corpus_shards, tmp_path, temperature):
    cache, tasks, _ = features_cache(corpus_shards, tmp_path)
    sizes = {t: len(cache.ids("train", t)) for t in tasks}
    want = mixing_probabilities(sizes, temperature)
    batches = CachedBatches(cache, tasks, want, 50, 16, 0, "features")
    seen = collections.Counter()
    for _ in range(40):
        inputs, labels, weights = next(batches)
        assert inputs["features"].shape == (50, 16, 324)
        w = np.stack([weights[t] for t in tasks], 1)
        assert np.all(w.sum(1) == 1)  # every example counts for exactly one head
        for t, n in zip(tasks, w.sum(0), strict=True):
            seen[t] += n
    for t in tasks:
        assert seen[t] / 2000 == pytest.approx(want[t], abs=0.035)


def test_batches_are_addressed_by_step_and_walk_each_task_in_passes(
    corpus_shards, tmp_path
):
    """A resumed run seeks to its step and gets the uninterrupted run's batches;
    within a pass each task's training examples are drawn once each."""
    cache, tasks, _ = features_cache(corpus_shards, tmp_path)
    probs = mixing_probabilities({t: len(cache.ids("train", t)) for t in tasks}, 1.0)
    whole = CachedBatches(cache, tasks, probs, 8, 32, 3, "features")
    batches = [next(whole) for _ in range(12)]
    resumed = CachedBatches(cache, tasks, probs, 8, 32, 3, "features")
    resumed.seek(7)
    for want in batches[7:]:
        got = next(resumed)
        np.testing.assert_array_equal(got[0]["features"], want[0]["features"])
        for t in tasks:
            np.testing.assert_array_equal(got[2][t], want[2][t])
    task = tasks[0]
    one = CachedBatches(cache, [task], {task: 1.0}, 1, 4, 0, "features")
    pool = cache.ids("train", task)
    drawn = [one._example(0) for _ in range(len(pool))]
    assert sorted(drawn) == sorted(pool.tolist())


def test_the_cache_is_keyed_by_encoder_and_reused_only_for_the_same(
    corpus_shards, tmp_path
):
    encoder = M3BertEncoder(1, 16, 2, 32, frame_stack=2, dropout=0.0, name="encoder")
    cache, _, messages = features_cache(corpus_shards, tmp_path, encoder, window=64)
    assert "cached in" in messages[-1] and cache.width == 16 and cache.frame_stack == 2
    # Rows are the encoder's outputs over windows of 64 frames, stitched.
    i = int(np.argmax(cache.lengths))
    path = shards.list_shards(corpus_shards)
    examples = [ex for p in path for ex in records.read_examples(p)]
    kept = [ex for ex in examples if ex["split"] in example_cache.SPLITS]
    features = kept[i]["features"]
    assert len(features) > 64 and cache.lengths[i] == -(-len(features) // 2)
    rows = []
    for w in windows.plan(len(features), 64, 64, 2):
        out = encoder({"features": features[None, w.start : w.stop],
                       "padding_mask": np.ones((1, w.stop - w.start), bool)})  # fmt: skip
        first = w.start // 2
        rows.append(
            out["sequence_output"].numpy()[0, w.keep_start - first : w.keep_stop - first]
        )
    np.testing.assert_allclose(cache.sequence(i), np.concatenate(rows), atol=1e-4)
    again, _, messages = features_cache(corpus_shards, tmp_path, encoder, window=64)
    assert "from the cache" in messages[-1] and again.path == cache.path
    encoder.blocks[0].trainable_weights[0].assign_add(1.0)  # another encoder
    other, _, messages = features_cache(corpus_shards, tmp_path, encoder, window=64)
    assert other.path != cache.path and "cached in" in messages[-1]
    assert not os.path.exists(cache.path), "the stale cache is removed"


def tiny_trainer(uncertainty=False):
    encoder = M3BertEncoder(1, 16, 2, 32, dropout=0.0, name="encoder")
    specs = [
        TaskSpec("a", "classification", classes=("x", "y", "z")),
        TaskSpec("b", "regression", outputs=("v",)),
        TaskSpec("c", "multilabel", classes=("p", "q")),
    ]
    config = finetune.FinetuneConfig(
        pretrained="",
        data="",
        model_dir="",
        embedding_dim=8,
        uncertainty_weighting=uncertainty,
    )
    return finetune.FinetuneTrainer(config, specs, encoder), encoder


def batch_for(task, key="features", width=324):
    rng = np.random.default_rng(0)
    inputs = {
        key: rng.standard_normal((4, 8, width)).astype("float32"),
        "padding_mask": np.ones((4, 8), bool),
    }
    labels = {"a": np.array([[0.0], [1.0], [2.0], [1.0]], "float32"), "b": np.ones((4, 1), "float32"),
              "c": np.ones((4, 2), "float32")}  # fmt: skip
    weights = {t: np.full(4, 1.0 if t == task else 0.0, "float32") for t in "abc"}
    return inputs, labels, weights


def test_unlabeled_heads_get_zero_gradient_and_the_encoder_stays_frozen():
    trainer, encoder = tiny_trainer()
    assert not any(v.path.startswith("encoder") for v in trainer.variables)
    encoder_before = [w.copy() for w in encoder.get_weights()]
    heads = {t: trainer.model.get_layer(f"head_{t}") for t in "abc"}
    before = {t: [w.copy() for w in h.get_weights()] for t, h in heads.items()}
    inputs, labels, weights = batch_for("a")
    with tf.GradientTape() as tape:
        outputs = trainer.model(inputs, training=True)
        loss = trainer.total_loss(
            finetune.task_losses(trainer.specs, labels, weights, outputs)
        )
    grads = dict(
        zip(
            [v.path for v in trainer.variables],
            tape.gradient(loss, trainer.variables),
            strict=True,
        )
    )
    for t in "bc":
        for v in heads[t].trainable_variables:
            assert np.all(grads[v.path].numpy() == 0)
    assert np.any(grads[heads["a"].trainable_variables[0].path].numpy() != 0)
    for _ in range(2):  # the warm-up's first step has learning rate 0
        trainer.train_step(batch_for("a", "sequence", 16))  # the frozen encoder's outputs
    for t in "bc":  # Adam with zero gradients leaves the weights exactly where they were
        for old, new in zip(before[t], heads[t].get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)
    assert not np.array_equal(before["a"][0], heads["a"].get_weights()[0])
    for old, new in zip(encoder_before, encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_unfreezing_the_top_block_trains_only_it():
    encoder = M3BertEncoder(2, 16, 2, 32, dropout=0.0, name="encoder")
    finetune.freeze_encoder(encoder, 1)
    names = {v.path.split("/")[0] for v in encoder.trainable_variables}
    assert names == {"transformer_1"}
    with pytest.raises(ValueError, match="unfreeze_top_blocks=3: the encoder has 2 blocks"):
        finetune.freeze_encoder(encoder, 3)


def test_uncertainty_weighting_learns_task_weights():
    trainer, _ = tiny_trainer(uncertainty=True)
    losses = {"a": tf.constant(2.0), "b": tf.constant(0.5), "c": tf.constant(1.0)}
    assert float(trainer.total_loss(losses)) == pytest.approx(3.5)  # s_t = 0: the plain sum
    for _ in range(2):  # the warm-up's first step has learning rate 0
        trainer.train_step(batch_for("a", "sequence", 16))
    s = trainer.log_vars.numpy()
    assert s[0] != 0 and s[1] == 0 and s[2] == 0  # only the labeled task's weight moves


def test_metrics_on_known_predictions():
    cls = TaskSpec("g", "classification", classes=("x", "y"))
    assert (
        score_task(cls, np.array([[0.0], [1.0]]), np.array([[0.9, 0.1], [0.2, 0.8]]))[
            "accuracy"
        ]
        == 1.0
    )
    ml = TaskSpec("m", "multilabel", classes=("p", "q", "r"))
    labels = np.array(
        [[1, 0, 0], [0, 1, 0], [1, 1, 0]], float
    )  # "r" never occurs: left out
    result = score_task(ml, labels, labels * 0.8 + 0.1)
    assert result["roc_auc_macro"] == 1.0 and result["pr_auc_macro"] == 1.0
    reg = TaskSpec("e", "regression", outputs=("v", "a"))
    y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    result = score_task(reg, y, y)
    assert result["r2_v"] == 1.0 and result["r2_a"] == 1.0
    assert chance_score(reg, y, y) == pytest.approx(0.0)
    assert (
        chance_score(cls, np.array([[1.0], [1.0], [0.0]]), np.array([[1.0], [0.0]])) == 0.5
    )


def finetune_args(corpus, model_dir, steps, every):
    return [
        f"--flagfile={os.path.join(ROOT, 'configs', 'tiny_finetune.flags')}",
        f"--pretrained={corpus['pretrained']}", f"--data={corpus['shards']}", f"--model_dir={model_dir}",
        f"--train_steps={steps}", f"--eval_every={every}", f"--checkpoint_every={every or steps}",
        "--log_every=50",
    ]  # fmt: skip


@pytest.mark.slow
def test_every_task_beats_chance_on_the_example_corpus(pretrained_corpus, tmp_path):
    res = subprocess.run(
        run_bin("finetune", *finetune_args(pretrained_corpus, tmp_path, 6000, 100)),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]
    assert set(metrics) == {"genre", "instrument", "valence", "arousal"}
    # Judged on both held-out splits (16 examples each) against the same
    # predictor that ignores the audio. Instrument is the hardest: per-track
    # CMVN removes a timbre's fixed spectrum, leaving only its envelope; with
    # this release's encoder it sits 0.03-0.16 above chance depending on the
    # fine-tuning seed (0, 2, 1), one example being 0.06 of a split: above
    # chance is what 32 clips can tell.
    margins = {"genre": 0.25, "instrument": 0.0, "valence": 0.25, "arousal": 0.25}
    for task, margin in margins.items():
        splits = [metrics[task][split] for split in ("valid", "test")]
        assert all(m["examples"] >= 12 for m in splits)
        score = np.mean([m["score"] for m in splits])
        chance = np.mean([m["chance"] for m in splits])
        assert score > chance + margin, (task, splits)
    assert os.path.exists(tmp_path / "multitask.keras")
    assert (
        "each scored whole: every frame, through encoder windows of 256 frames"
        in res.stdout
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_early"]


def whole_clip_predictions(model, features, window):
    """{task: [outputs]} of one example computed directly from the saved model:
    encoder windows of `window` frames, stitched, enrichment averaged over every
    frame, then the heads."""
    k = model.encoder.frame_stack
    frames = []
    for w in windows.plan(len(features), window, window, k):
        out = model({"features": features[None, w.start : w.stop],
                     "padding_mask": np.ones((1, w.stop - w.start), bool)})  # fmt: skip
        first = w.start // k
        frames.append(
            out["frame_embedding"].numpy()[0, w.keep_start - first : w.keep_stop - first]
        )
    clip = np.concatenate(frames).mean(0, keepdims=True)
    return {
        t["name"]: model.get_layer(f"head_{t['name']}")(clip).numpy()[0]
        for t in model.tasks
    }


@pytest.mark.parametrize("unfreeze", [0, 1])
def test_the_table_scores_whole_clips_as_the_saved_model_does(
    pretrained_corpus, tmp_path, unfreeze
):
    argv = run_bin("finetune", *finetune_args(pretrained_corpus, tmp_path, 60, 30))
    res = subprocess.run(
        argv + [f"--unfreeze_top_blocks={unfreeze}"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    table = json.loads((tmp_path / "metrics.json").read_text())["tasks"]
    model = runs.load_multitask(str(tmp_path))
    specs, _ = read_task_info(shards.read_manifests(pretrained_corpus["shards"]))
    sizes = {t: specs[t].size for t in specs}
    got = collections.defaultdict(lambda: ([], []))
    longest = 0
    for serialized in tf.data.TFRecordDataset(
        shards.list_shards(pretrained_corpus["shards"])
    ):
        ex = records.parse_example(serialized, sizes)
        split = ex["split"].numpy().decode()
        if split not in ("valid", "test"):
            continue
        features = ex["features"].numpy()
        longest = max(longest, len(features))
        preds = whole_clip_predictions(model, features, 256)
        for t in specs:
            if ex["has/" + t].numpy():
                got[t, split][0].append(ex["label/" + t].numpy())
                got[t, split][1].append(preds[t])
    assert longest > 256, "examples longer than the training crop"
    for (task, split), (labels, preds) in got.items():
        want = score_task(specs[task], np.array(labels), np.array(preds))
        for metric, value in want.items():
            assert table[task][split][metric] == pytest.approx(value, abs=1e-4), (
                task,
                split,
            )


def finetune_log(stderr):
    """{step: loss} and {step: validation score} lines of a run's log."""
    losses, scores = {}, {}
    for line in stderr.splitlines():
        if line.startswith("finetune: ") and " steps (" in line:
            losses[line.split("/")[0].split()[-1]] = line.split("loss ")[1]
        if "validation at step" in line:
            scores[line.split("step ")[1].split(":")[0]] = line.split("score ")[1].split()[
                0
            ]
    return losses, scores


@pytest.mark.slow
def test_killed_finetuning_with_dropout_resumes_exactly(pretrained_corpus, tmp_path):
    """kill -9 and resume: the losses, validation scores and final weights of
    an uninterrupted run (batches are addressed by step; dropout's state is
    checkpointed)."""

    def argv(name):
        return run_bin(
            "finetune", *finetune_args(pretrained_corpus, tmp_path / name, 400, 20),
            "--dropout=0.1", "--patience=1000", "--eval_every=50", "--log_every=10",
        )  # fmt: skip

    whole = subprocess.run(argv("whole"), env=ENV, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed_at = kill_after_checkpoints(
        argv("cut"), tmp_path / "cut" / "checkpoints", 2, ENV
    )
    assert not (tmp_path / "cut" / "metrics.json").exists(), (
        "the run finished before the kill"
    )
    res = subprocess.run(argv("cut"), env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        f"resumed from {tmp_path / 'cut' / 'checkpoints' / f'ckpt-{killed_at}'}"
        in res.stderr
    )
    (losses, scores), (resumed_losses, resumed_scores) = map(
        finetune_log, (whole.stderr, res.stderr)
    )
    after = {k: v for k, v in losses.items() if int(k) > killed_at}
    assert after and after == {k: v for k, v in resumed_losses.items() if k in after}
    assert {k: v for k, v in scores.items() if int(k) > killed_at} == resumed_scores
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "whole" / "metrics.json").read_text()
    )
    for a, b in zip(
        runs.load_multitask(str(tmp_path / "whole")).get_weights(),
        runs.load_multitask(str(tmp_path / "cut")).get_weights(), strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def checkpoint_sizes(checkpoint_dir) -> tuple[int, int]:
    """(bytes of the newest checkpoint, bytes of its model and optimizer
    variables as float32)."""
    path = tf.train.latest_checkpoint(str(checkpoint_dir))
    total = sum(os.path.getsize(f) for f in glob.glob(path + ".*"))
    state = sum(
        4 * int(np.prod(shape))
        for name, shape in tf.train.list_variables(path)
        if name.startswith(("model/", "optimizer/"))
    )
    return total, state


def test_checkpoints_hold_no_input_buffers(pretrained_corpus, tmp_path):
    argv = run_bin("finetune", *finetune_args(pretrained_corpus, tmp_path, 20, 0))
    res = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    for job, directory in (
        ("pretraining", os.path.join(pretrained_corpus["pretrained"], "checkpoints")),
        ("fine-tuning", tmp_path / "checkpoints"),
    ):
        total, state = checkpoint_sizes(directory)
        print(
            f"tiny {job} checkpoint: {total / 1e6:.2f} MB, model + optimizer {state / 1e6:.2f} MB"
        )
        assert 0 < state and total < 5 * state, (job, total, state)


def test_eval_every_zero_scores_at_the_end_only(pretrained_corpus, tmp_path):
    argv = run_bin("finetune", *finetune_args(pretrained_corpus, tmp_path, 3, 0))
    res = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("validation at step") == 1
    assert "validation at step 3" in res.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 3


def test_a_resume_on_data_of_other_tasks_is_refused_naming_them(
    pretrained_corpus, tmp_path
):
    """Was: "checkpoint ... cannot be read" for every good checkpoint (their
    heads are another task set's)."""
    from conftest import extract_labeled

    model_dir = tmp_path / "run"
    first = subprocess.run(
        run_bin("finetune", *finetune_args(pretrained_corpus, model_dir, 2, 0)),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    other = extract_labeled(
        tmp_path, [(f"o{i}", ("train", "valid", "test")[i % 3], "other", "ab"[i % 2])
                   for i in range(6)]
    )  # fmt: skip
    args = finetune_args({**pretrained_corpus, "shards": other}, model_dir, 4, 0)
    again = subprocess.run(
        run_bin("finetune", *args), env=ENV, capture_output=True, text=True
    )
    assert again.returncode == 2, again.stderr[-3000:]
    (line,) = [x for x in again.stderr.splitlines() if "task_names" in x]
    assert "-> ['other']" in line and "cannot be read" not in again.stderr
