"""`bin/evaluate`: the paper's probe protocol over models and baselines.

    result = run_evaluate(EvaluateConfig(data=..., models=("runs/m3bert",), output_dir=...))

For every task of the data: every feature set (`feature_sets.py`, each
pooled over its frames alike: `pooling.py`) probed with a linear model and
an MLP (`probe.py`: hyper-parameters chosen on valid, scored on test) over
`seeds` seeds, reported as mean ± std beside the audio-blind chance score;
then each model's added-value row (its embedding joined to the raw baseline
best on valid, compared paired with that baseline alone). Writes `<output_dir>/results.json`, `results.md`
and `plot_<task>.png` (`report.py`); embeddings are cached under
`<output_dir>/embeddings/`, so a rerun with other probe settings reads them.
"""

import dataclasses
import os
import time

import numpy as np

from m3bert_tf import runs
from m3bert_tf.evaluate import (
    bootstrap,
    comparisons,
    feature_sets,
    folds,
    pooling,
    probe,
    report,
)
from m3bert_tf.evaluate.baselines import BASELINES, Context, raw_frames
from m3bert_tf.evaluate.config import EvaluateConfig
from m3bert_tf.evaluate.model_sets import curve_entries, model_sets, named
from m3bert_tf.io import storage
from m3bert_tf.tasks import metrics

# BLAS threads of the probe stage. Its matrices are small (hundreds of
# examples by hundreds of dimensions): on 2 cores (AMD EPYC, 2026-12-07) one
# BLAS thread per core took the stage of a 12-class task 98.5 s alone and
# 529 s beside two busy processes (x5.4), where OpenBLAS's threads spin
# waiting for each other; one thread took 89.8 s and 129 s (x1.44)
# (benchmarks/evaluate_bench.py). The limit is lifted when the stage ends.
PROBE_BLAS_THREADS = 1


def probe_threads():
    """A context that runs BLAS (numpy, scipy, scikit-learn) on
    `PROBE_BLAS_THREADS` threads and restores the process's setting after."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=PROBE_BLAS_THREADS, user_api="blas")


def _probe_data(
    examples, task: str, x: np.ndarray, score_per: str, splits=None
) -> probe.ProbeData:
    """The task's examples by split (`splits` [N] overrides the data's: a fold)."""
    splits = examples.splits if splits is None else splits
    data = probe.ProbeData({}, {}, {} if score_per == "track" else None)
    for split in ("train", "valid", "test"):
        rows = np.flatnonzero((splits == split) & examples.has[task])
        data.x[split] = x[rows]
        data.y[split] = examples.labels[task][rows]
        if data.groups is not None:
            data.groups[split] = examples.track_ids[rows]
    return data


def _probe_task(config, spec, examples, sets, progress) -> dict:
    """results.json's entry of one task: every feature set x probe x seed,
    then the added-value rows (`added_value_sets`).

    Raises:
      ValueError: the task cannot be probed (e.g. no finite validation score).
    """
    task, rows, done = spec.name, [], [0]
    resampled, shared = [], {}  # per row: [B] scores on the task's one set of resamples
    # The data's own splits, or K folds whose test predictions are pooled.
    parts = (
        folds.partitions(examples, task, spec, config.folds)
        if config.folds
        else [examples.splits]
    )

    def probe_set(fs):
        data = [_probe_data(examples, task, fs.x, config.score_per, p) for p in parts]
        for kind in config.probes:
            grid = probe.GRIDS[kind]
            # A solved probe is deterministic: its seeds would repeat seed 0.
            solved = fs.x.ndim == 2 and all(c.solved for c in grid)
            seeds, predictions, weights = [], [], []
            for seed in range(config.seeds):
                if solved and seed:
                    seeds += [{**s, "seed": seed} for s in seeds[: len(data)]]
                    predictions.append(predictions[0])
                else:
                    pooled, labels = [], []
                    for fold, part in enumerate(data):
                        r = probe.run_probe(spec, part, grid, seed, config.epochs)
                        seeds.append({
                            "seed": seed, "fold": fold if config.folds else None,
                            "chosen": dataclasses.asdict(r.chosen), "epoch": r.epoch,
                            "valid": r.valid, "test": r.test,
                        })  # fmt: skip
                        labels.append(r.test_labels)
                        pooled.append(r.test_predictions)
                        if r.layer_weights is not None:
                            weights.append(r.layer_weights)
                    shared["labels"] = np.concatenate(labels)
                    predictions.append(np.concatenate(pooled))
                done[0] += 1
                progress(done[0])
            mean, std = _summary(seeds)
            if config.folds:
                # The main score of the pooled out-of-fold predictions (mean over
                # seeds): what the interval resamples and the audio-blind score
                # is computed on. A mean of per-fold R² or ROC-AUC is not: on a
                # fold of 8 tracks one R² can be -3.
                everything = np.arange(len(shared["labels"]))[None]
                mean["score"] = float(
                    bootstrap.resampled_scores(
                        spec, shared["labels"], predictions, everything
                    )[0]
                )
            if "indices" not in shared:  # one set of resamples for the whole task: paired
                shared["indices"] = bootstrap.resample_indices(len(shared["labels"]))
            resampled.append(
                bootstrap.resampled_scores(
                    spec, shared["labels"], predictions, shared["indices"]
                )
            )
            rows.append({"set": fs.name, "probe": kind, "mean": mean, "std": std,
                         "interval": bootstrap.interval(resampled[-1]),
                         "seeds": seeds, "dim": int(fs.x.shape[-1]),
                         "pooling": fs.pooling, "kind": fs.kind})  # fmt: skip
            for key in ("profile", "layer", "adds_to", "curve"):
                if getattr(fs, key):
                    rows[-1][key] = getattr(fs, key)
            if fs.curve:
                rows[-1]["step"] = fs.step
            if weights:
                rows[-1]["layer_weights"] = np.mean(weights, axis=0).tolist()

    for fs in sets:
        probe_set(fs)
    base = comparisons.best_raw_baseline(rows) if config.added_value else None
    for fs in comparisons.added_value_sets(sets, base):
        probe_set(fs)
    # The audio-blind predictor, fit on each partition's training labels (per
    # fold under --folds, its test predictions pooled as the probes' are).
    blind = []
    for part in parts:
        data = _probe_data(examples, task, sets[0].x, config.score_per, part)
        test_labels, train_labels = (
            probe.group_labels(spec, data.y[s], (data.groups or {}).get(s))
            for s in ("test", "train")
        )
        blind.append((train_labels, test_labels))
    chance = metrics.chance_score(spec, *blind[0])
    if config.folds and spec.kind != "multilabel":
        test_labels = np.concatenate([t for _, t in blind])
        guesses = [metrics.chance_predictions(spec, tr, len(t)) for tr, t in blind]
        chance = metrics.score_task(spec, test_labels, np.concatenate(guesses))["score"]
    return {
        "spec": spec.to_json(),
        "per": config.score_per,
        "test_examples": sum(len(t) for _, t in blind)
        if config.folds
        else len(test_labels),
        "folds": config.folds,
        "chance": chance,
        "rows": rows,
        "added_to": base,
        "comparisons": comparisons.paired(rows, resampled),
        "resamples": bootstrap.RESAMPLES,
    }


def _undefined_score(config, spec, examples) -> str:
    """Why a regression task's R² is undefined on the splits it is judged on
    (every output's targets constant: valid, where probes are chosen, or
    test; the whole task under --folds), or ""."""
    task = spec.name
    judged = ("valid", "test") if not config.folds else ("",)
    for split in judged:
        rows = examples.has[task] & ((examples.splits == split) if split else True)
        constant = metrics.constant_outputs(spec, examples.labels[task][rows])
        if constant and len(constant) == len(spec.outputs):
            values = ", ".join(f"{k} = {v:g}" for k, v in constant.items())
            where = f"its {split} targets are" if split else "its targets are"
            return f"R² is undefined: {where} constant ({values}), so no score can rank anything"
    return ""


def _summary(seeds: list[dict]) -> tuple[dict, dict]:
    """(mean, std) over the seeds of each test metric."""
    keys = [k for k in seeds[0]["test"] if k != "examples"]
    values = {k: np.array([r["test"].get(k, np.nan) for r in seeds]) for k in keys}
    return (
        {k: float(np.mean(v)) for k, v in values.items()},
        {k: float(np.std(v)) for k, v in values.items()},
    )


def _distinct(sets: list, log) -> list:
    """The feature sets without repeats (a fine-tuned model's frozen encoder
    is its pretrained model, listed too); a learning curve's points stay."""
    out = []
    for fs in sets:
        if fs.curve:  # a learning curve keeps every point, its last one too
            out.append(fs)
            continue
        same = next(
            (o for o in out if o.x.shape == fs.x.shape and np.array_equal(o.x, fs.x)), None
        )
        if same is None:
            out.append(fs)
        else:
            log(f"{fs.name} equals {same.name}: one row")
    return out


def run_evaluate(config: EvaluateConfig, log=print) -> dict:
    """Runs the protocol; returns what results.json holds (plus "markdown").

    Raises:
      locks.DirectoryInUse: another live job writes to `output_dir`.
    """
    from m3bert_tf.io import locks

    with locks.DirectoryLock(config.output_dir, "output_dir"):
        return _evaluate(config, log)


def _evaluate(config: EvaluateConfig, log) -> dict:
    from m3bert_tf.data import shards
    from m3bert_tf.io.progress import Progress
    from m3bert_tf.tasks import read_task_info

    t0 = time.monotonic()
    for flag, entries in (("models", config.models), ("embeddings", config.embeddings)):
        for entry in entries:  # before any record is read or file written
            if not storage.exists(runs.at_step(named(entry)[1], allow_every=True)[0]):
                raise FileNotFoundError(f"{flag}: {named(entry)[1]} does not exist")
    entries = curve_entries(config.models)
    files = shards.list_shards(config.data)
    manifests = shards.read_manifests(config.data)
    specs, _ = read_task_info(manifests)
    tasks = list(config.tasks) or sorted(specs)
    unknown = [t for t in tasks if t not in specs]
    if unknown or not tasks:
        raise ValueError(
            f"tasks: {unknown or 'none'} not in the data's manifests (tasks there: "
            f"{sorted(specs) or 'none: unlabeled data'})"
        )
    # Every task's examples are embedded (and cached), whichever are probed now.
    label_sizes = {t: specs[t].size for t in sorted(specs)}
    manifest_spec = next(iter(manifests.values())).get("feature_spec")
    storage.makedirs(config.output_dir)
    cache_dir = os.path.join(config.output_dir, "embeddings")
    examples = feature_sets.load_examples(files, label_sizes, cache_dir, log, raw_frames())

    sets, first = [], None
    for entry in entries:
        found, model = model_sets(
            entry, config, files, label_sizes, manifest_spec, log, manifests
        )
        sets += found
        first = first or model
    context = Context(files, label_sizes, cache_dir, config.layer, config.batch_size, log)
    for name in config.baselines:  # in the order asked
        baseline = BASELINES[name]
        stats = (
            examples.baselines[name] if baseline.frames
            else baseline.from_model(first, context)
        )  # fmt: skip
        x = pooling.pool(stats, config.pooling)
        sets.append(
            feature_sets.FeatureSet(name, x, baseline.what, config.pooling, kind="baseline")
        )
    for entry in config.embeddings:
        name, path = named(entry)
        sets.append(feature_sets.load_external(path, examples, name, config.pooling))

    sets = _distinct(sets, log)
    results = {"tasks": {}, "feature_sets": {s.name: s.what for s in sets}, "skipped": {}}
    for task in list(tasks):
        empty = [
            split for split in ("train", "valid", "test")
            if not np.any((examples.splits == split) & examples.has[task])
        ]  # fmt: skip
        if empty and not config.folds:  # folds pool every split
            results["skipped"][task] = f"no {' or '.join(empty)} examples"
            log(
                f"task {task}: skipped, {results['skipped'][task]} (a probe needs all three)"
            )
            tasks.remove(task)
            continue
        why = _undefined_score(config, specs[task], examples)
        if why:
            results["skipped"][task] = why
            log(f"task {task}: not probed, {why}")
            tasks.remove(task)
    if not tasks:
        raise ValueError(
            f"data={config.data}: no task can be scored ("
            + "; ".join(f"{t}: {why}" for t, why in results["skipped"].items())
            + ")"
        )
    added = len(comparisons.added_value_sources(sets)) if config.added_value else 0
    if added and not any(
        fs.kind == "baseline" and BASELINES[fs.name].frames for fs in sets
    ):
        log("no raw baseline (mfcc, features) to join: no added-value rows")
        added = 0
    per_task = (len(sets) + added) * len(config.probes) * config.seeds
    progress = Progress("evaluate: probing", len(tasks) * per_task, "probes")
    for number, task in enumerate(tasks):
        # One task that cannot be probed (a degenerate split, labels that
        # disagree within a track) is listed with its reason; the others go on.
        try:
            with probe_threads():
                results["tasks"][task] = _probe_task(
                    config, specs[task], examples, sets,
                    lambda done, base=number * per_task: progress.update(base + done),
                )  # fmt: skip
        except (ValueError, FloatingPointError) as e:
            results["skipped"][task] = str(e).removeprefix(f"task {task}: ")
            log(f"task {task}: not probed, {results['skipped'][task]}")
    if not results["tasks"]:
        raise ValueError(
            f"data={config.data}: no task could be probed ("
            + "; ".join(f"{t}: {why}" for t, why in results["skipped"].items())
            + ")"
        )
    results["settings"] = {
        **dataclasses.asdict(config), "grids": {
            k: [dataclasses.asdict(c) for c in probe.GRIDS[k]] for k in config.probes
        },
    }  # fmt: skip
    results["seconds"] = time.monotonic() - t0
    report.write(results, config.output_dir)
    results["markdown"] = report.markdown(results)
    return results
