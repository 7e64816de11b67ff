"""The multi-task fine-tuning job (M3BERT).

    run_finetune(FinetuneConfig(pretrained=..., data=..., model_dir=...))

The pretrained encoder (`<pretrained>/encoder.keras` from bin/pretrain) is
frozen, or all but its top `unfreeze_top_blocks` blocks are; the enrichment
layer and one head per task train on batches that mix every task
(`batches.py`). Frozen, the encoder's output for every example is computed
once (`runs/example_cache.py`: windows of the training crop, stitched) and the
enrichment layer and heads train on random crops of it; with blocks to
fine-tune, the cache holds the normalized features and the whole model runs
each step (`finetune_trainer.py`: the losses, the step, whole-clip
scores). One device.
Features are normalized as the encoder was pretrained (the pretraining run's
input_spec.json), and cropped to its max_frames unless told otherwise; data
of another feature spec than the encoder was pretrained on is refused.

Adam follows the pre-training schedule (linear warm-up over
`warmup_fraction` of `train_steps`, then linear decay), so `train_steps` is
a ceiling. Every `eval_every` steps the validation split is scored on whole
clips (every frame of each example: encoder windows of the training crop,
stitched, the enrichment pooled over all of them; accuracy; ROC-AUC/PR-AUC
macro; R² per output); the mean of the tasks' main scores picks the best
weights, and `patience` evaluations without improvement stop the run. At the end the best weights are scored on validation and test,
printed as a table and written to metrics.json, and the model is saved as
multitask.keras. Run directory, checkpoints, resume, TensorBoard, progress
and the NaN stop are the shared skeleton's (`loop.py`), as in pre-training.
"""

import dataclasses
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

from m3bert_tf import runs, schema
from m3bert_tf.data import shards
from m3bert_tf.io import storage
from m3bert_tf.runs import example_cache
from m3bert_tf.tasks import mixing_probabilities, read_task_info
from m3bert_tf.tasks.metrics import chance_score, score_task
from m3bert_tf.train.batches import CachedBatches
from m3bert_tf.train.checkpoints import random_states
from m3bert_tf.train.configs import FINETUNE_MAY_CHANGE, FinetuneConfig
from m3bert_tf.train.finetune_trainer import FinetuneTrainer, freeze_encoder, task_losses
from m3bert_tf.train.loop import Cadence, open_session, run_loop

__all__ = [
    "FinetuneConfig", "FinetuneTrainer", "freeze_encoder", "run_finetune", "task_losses",
]  # fmt: skip


def pretrained_settings(config: FinetuneConfig, manifests: dict) -> tuple[dict, int]:
    """(input spec, max_frames) the pretrained encoder was trained with; `manifests`
    are those of `config.data` (`shards.read_manifests`).

    Raises:
      runs.ConfigMismatch: `config.normalization` names another normalization,
        or `config.data` holds features of another spec.
    """
    stored = runs.read_input_spec(config.pretrained)
    if config.normalization and config.normalization != stored["normalization"]:
        raise runs.ConfigMismatch(
            f"normalization={config.normalization}: the encoder in {config.pretrained} was "
            f"trained on '{stored['normalization']}' features; fine-tune with the same"
        )
    for d, manifest in manifests.items():
        runs.check_same_features(
            stored["feature_spec"], manifest["feature_spec"], d,
            f"the encoder in {config.pretrained} was trained on",
        )  # fmt: skip
    max_frames = config.max_frames
    if not max_frames:
        try:
            max_frames = int(runs.read_config(config.pretrained)["max_frames"])
        except (FileNotFoundError, KeyError):
            max_frames = schema.CHUNK_FRAMES
    return stored, max_frames


def run_finetune(config: FinetuneConfig, flags_text: str = "", log=None) -> dict:
    """Fine-tunes (or resumes); returns {"tasks": {task: {split: metrics}}, ...}.

    Raises:
      runs.ConfigMismatch: `model_dir` holds a run with another config, a task
        is not in the data, or the normalization is not the encoder's.
      locks.DirectoryInUse: another job is running in `model_dir`.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    manifests = shards.read_manifests(config.data)  # checks every shard once
    all_specs, counts = read_task_info(manifests)
    names = config.tasks or tuple(sorted(all_specs))
    missing = [t for t in names if t not in all_specs]
    if missing:
        raise runs.ConfigMismatch(
            f"tasks: {missing} not in the data's manifests (it has {sorted(all_specs)})"
        )
    inputs, max_frames = pretrained_settings(config, manifests)
    try:
        runs.encoder_file(config.pretrained)  # before model_dir is made
    except FileNotFoundError as e:
        raise runs.ConfigMismatch(f"pretrained={e}") from None

    run = runs.RunDir(config.model_dir)
    with run.lock(lambda msg: log(f"finetune: {msg}")):
        return _finetune(
            config, run, inputs, max_frames, all_specs, counts, flags_text, log
        )


def _finetune(config, run, inputs, max_frames, all_specs, counts, flags_text, log) -> dict:
    names = config.tasks or tuple(sorted(all_specs))
    specs = [all_specs[t] for t in names]
    trainer = FinetuneTrainer(
        config, specs, runs.load_encoder(config.pretrained), max_frames
    )
    source = example_cache.CacheSource(
        data=config.data, label_sizes={s.name: s.size for s in specs},
        normalization=inputs["normalization"], stats=inputs["stats"],
        encoder=trainer.model.encoder if trainer.frozen else None, window=trainer.window,
    )  # fmt: skip
    opened = {}

    def make_stream():
        """The cache (built once the run's config is accepted) and its batches."""
        # The cache is memory-mapped: on this machine's disk (a temporary
        # directory when the run directory is remote; its key names the data).
        local = storage.local_path(run.file(runs.CACHE_DIR))
        cache = opened["cache"] = example_cache.open_cache(
            local or os.path.join(tempfile.gettempdir(), "m3bert-cache"),
            source,
            lambda msg: log(f"finetune: {msg}"),
            "finetune",
        )
        probs = mixing_probabilities(
            {t: len(cache.ids("train", t)) for t in names}, config.task_sampling_temperature
        )
        log(
            "finetune: task sampling " + ", ".join(f"{t} {p:.2f}" for t, p in probs.items())
        )
        return CachedBatches(
            cache, names, probs, config.batch_size, -(-max_frames // cache.frame_stack),
            config.seed, "sequence" if trainer.frozen else "features",
        )  # fmt: skip

    best = tf.Variable(-np.inf, dtype=tf.float64, name="best_score")
    bad_evals = tf.Variable(0, dtype=tf.int64, name="evaluations_without_improvement")
    # The tasks the heads are built for, resolved from the data: a resume on
    # data of other tasks is refused naming them (its checkpoints hold other
    # heads); a run of 0.2 and before stored none and is taken as these.
    stored_config = {**dataclasses.asdict(config), "task_names": list(names)}
    session = open_session(
        "finetune", run, stored_config, flags_text, FINETUNE_MAY_CHANGE,
        {"model": trainer.model, "optimizer": trainer.optimizer, "log_vars": trainer.log_vars,
         "best": best, "bad_evals": bad_evals, "random": random_states(trainer.model)},
        make_stream, lambda: int(trainer.optimizer.iterations.numpy()),
        lambda msg: log(f"finetune: {msg}"), added={"task_names": list(names)},
    )  # fmt: skip
    run.write_json(runs.INPUT_SPEC_NAME, inputs)
    best_path = run.file(runs.BEST_WEIGHTS_NAME)
    cache = opened["cache"]

    def evaluate(step):
        result = trainer.evaluate(cache, "valid")
        with session.eval_writer.as_default(step=step):
            tf.summary.scalar("score", result["score"])
            for task in names:
                for k, v in result[task].items():
                    tf.summary.scalar(f"{task}/{k}", v)
        score = result["score"]
        if (np.isfinite(score) and score > float(best.numpy())) or not run.exists(
            runs.BEST_WEIGHTS_NAME
        ):
            best.assign(score if np.isfinite(score) else best.numpy())
            bad_evals.assign(0)
            if run.is_chief():
                trainer.model.save_weights(best_path)
        else:
            bad_evals.assign_add(1)
        log(
            f"finetune: validation at step {step}: score {score:.4f} (best {float(best.numpy()):.4f})"
        )
        if int(bad_evals.numpy()) >= config.patience:
            log(
                f"finetune: no improvement in {config.patience} evaluations; stopping early"
            )
            return True
        return False

    cadence = Cadence(
        config.train_steps, config.log_every, config.checkpoint_every, config.eval_every
    )
    already_stopped = int(bad_evals.numpy()) >= config.patience
    result = run_loop(
        "finetune", session, cadence, lambda batches: trainer.train_step(next(batches)),
        evaluate, stopped_early=already_stopped,
    )  # fmt: skip
    if run.exists(runs.BEST_WEIGHTS_NAME):
        trainer.model.load_weights(best_path)
    window_s = trainer.window / schema.FRAMES_PER_SECOND
    results = {
        "step": result.step,
        "stopped_early": bool(result.stopped_early),
        "tasks": score_splits(trainer, specs, cache),
        "scope": f"n = clips (30 s chunks of tracks at most), each scored whole: every "
        f"frame, through encoder windows of {trainer.window} frames ({window_s:.1f} s), "
        "the enrichment pooled over all frames",
    }
    run.write_json(runs.METRICS_NAME, results)
    if run.is_chief():
        trainer.model.save(run.file(runs.MULTITASK_NAME))
    return results


def score_splits(trainer, specs, cache) -> dict:
    """{task: {split: metrics + "chance"}} on valid and test, chance fit on train labels."""
    collected = {split: trainer.collect(cache, split) for split in ("valid", "test")}
    table = {}
    for spec in specs:
        train_labels = cache.labels[spec.name][cache.ids("train", spec.name)]
        table[spec.name] = {}
        for split in ("valid", "test"):
            labels, preds = collected[split][spec.name]
            m = score_task(spec, labels, preds)
            m["chance"] = chance_score(spec, train_labels, labels)
            table[spec.name][split] = m
    return table
