"""`bin/evaluate`: the paper's probe protocol over models and baselines.

    result = run_evaluate(EvaluateConfig(data=..., models=("runs/m3bert",), output_dir=...))

For every task of the data: every feature set (`feature_sets.py`) probed
with a linear model and an MLP (`probe.py`: hyper-parameters chosen on
valid, scored on test) over `seeds` seeds, reported as mean ± std beside the
audio-blind chance score. Writes `<output_dir>/results.json`, `results.md`
and `plot_<task>.png` (`report.py`); embeddings are cached under
`<output_dir>/embeddings/`, so a rerun with other probe settings reads them.
"""

import dataclasses
import functools
import os
import re
import time

import numpy as np

from m3bert_tf import runs
from m3bert_tf.evaluate import bootstrap, feature_sets, folds, layers, probe, report
from m3bert_tf.evaluate.baselines import BASELINES, Context, frame_stats
from m3bert_tf.evaluate.config import EvaluateConfig
from m3bert_tf.io import storage
from m3bert_tf.tasks import metrics


def named(entry: str) -> tuple[str, str]:
    """`name=path` or `path` -> (name, path); a path's name is its last two
    parts for an export version (`m3bert/3`), else its last part."""
    if "=" in entry:
        name, path = entry.split("=", 1)
        return name, path
    path = entry.rstrip("/")
    parts = path.split(os.sep)
    name = "/".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]
    return name, path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def model_sets(entry: str, config, files, label_sizes, manifest_spec, log) -> tuple:
    """(feature sets of one model, the loaded `api.Model`)."""
    from m3bert_tf.serving import api

    name, path = named(entry)
    model = api.load(path)
    if not runs.same_features(model.info["input_spec"].get("feature_spec"), manifest_spec):
        raise ValueError(
            f"models={path}: trained on other features than data={config.data} holds "
            "(re-extract the data with the model's feature settings)"
        )
    cache_dir = os.path.join(config.output_dir, "embeddings")
    described = feature_sets.data_description(files, label_sizes)
    weights = runs.model_digest(path)

    def embedded(layer, label):
        key = feature_sets.digest(described, weights, str(layer), model.window_frames)
        return feature_sets.cached(
            cache_dir, _slug(f"{label}.{layer}"), key,
            lambda: feature_sets.embed_examples(
                model, files, label_sizes, layer, config.batch_size, label
            ),
            log,
        )  # fmt: skip

    embedded = functools.cache(embedded)
    layer = model.check_layer(config.layer)
    what = f"layer {layer}, mean over every frame"
    if model.kind != "finetuned":
        x = embedded(layer, name)["embedding"]
        return layers.encoder_sets(f"M2BERT {name}", x, what), model
    out = []
    enrichment = embedded("last", name)["enrichment"]
    out.append(feature_sets.FeatureSet(f"M3BERT {name}", enrichment, "enrichment layer"))
    tuned = model.info.get("config", {})
    if not tuned.get("unfreeze_top_blocks"):
        # The frozen encoder is the pretrained one: its rows are the M2BERT rows.
        x = embedded(layer, name)["embedding"]
        out = layers.encoder_sets(f"M2BERT {name}", x, what + " (frozen encoder)") + out
    elif tuned.get("pretrained") and storage.exists(tuned["pretrained"]):
        sets, _ = model_sets(
            tuned["pretrained"], config, files, label_sizes, manifest_spec, log
        )
        out = sets + out
    else:
        log(f"{path}: blocks were unfrozen and its pretrained run is gone: no M2BERT row")
    return out, model


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
    """results.json's entry of one task: every feature set x probe x seed.

    Raises:
      ValueError: the task cannot be probed (e.g. no finite validation score).
    """
    task, rows, done = spec.name, [], 0
    resampled, labels = [], None  # per row: [B] scores on the shared resamples
    # The data's own splits, or K folds whose test predictions are pooled.
    parts = (
        folds.partitions(examples, task, spec, config.folds)
        if config.folds
        else [examples.splits]
    )
    for fs in sets:
        data = [_probe_data(examples, task, fs.x, config.score_per, p) for p in parts]
        for kind in config.probes:
            seeds, predictions, weights = [], [], []
            for seed in range(config.seeds):
                pooled, labels = [], []
                for fold, part in enumerate(data):
                    r = probe.run_probe(spec, part, probe.GRIDS[kind], seed, config.epochs)
                    seeds.append({
                        "seed": seed, "fold": fold if config.folds else None,
                        "chosen": dataclasses.asdict(r.chosen), "epoch": r.epoch,
                        "valid": r.valid, "test": r.test,
                    })  # fmt: skip
                    labels.append(r.test_labels)
                    pooled.append(r.test_predictions)
                    if r.layer_weights is not None:
                        weights.append(r.layer_weights)
                labels = np.concatenate(labels)
                predictions.append(np.concatenate(pooled))
                done += 1
                progress(done)
            mean, std = _summary(seeds)
            if not len(resampled):  # one set of resamples for the whole task: paired
                indices = bootstrap.resample_indices(len(labels))
            resampled.append(bootstrap.resampled_scores(spec, labels, predictions, indices))
            rows.append({"set": fs.name, "probe": kind, "mean": mean, "std": std,
                         "interval": bootstrap.interval(resampled[-1]),
                         "seeds": seeds, "dim": int(fs.x.shape[-1])})  # fmt: skip
            if fs.profile:
                rows[-1].update(profile=fs.profile, layer=fs.layer)
            if weights:
                rows[-1]["layer_weights"] = np.mean(weights, axis=0).tolist()
    train = _probe_data(examples, task, sets[0].x, config.score_per, parts[0])
    test_labels, train_labels = (
        probe.group_labels(spec, train.y[s], (train.groups or {}).get(s))
        for s in ("test", "train")
    )
    if config.folds:  # every unit is tested once: chance from all of them
        test_labels = train_labels = labels
    return {
        "spec": spec.to_json(),
        "per": config.score_per,
        "test_examples": len(test_labels),
        "folds": config.folds,
        "chance": metrics.chance_score(spec, train_labels, test_labels),
        "rows": rows,
        "comparisons": _comparisons(rows, resampled),
        "resamples": bootstrap.RESAMPLES,
    }


def _comparisons(rows: list[dict], resampled: list) -> list[dict]:
    """Per probe: every other feature set against the best baseline (by mean
    test score), and the other feature sets against each other, paired on the
    task's resamples (`bootstrap.compare`)."""
    out = []
    for kind in dict.fromkeys(r["probe"] for r in rows):
        mine = [i for i, r in enumerate(rows) if r["probe"] == kind]
        baselines = [i for i in mine if rows[i]["set"] in BASELINES]
        others = [i for i in mine if rows[i]["set"] not in BASELINES]
        # Rows of one layer profile are compared with the baseline, not with
        # each other: the profile's plot shows them side by side.
        pairs = [
            (a, b) for n, a in enumerate(others) for b in others[n + 1 :]
            if not rows[a].get("profile") or rows[a].get("profile") != rows[b].get("profile")
        ]  # fmt: skip
        if baselines:
            best = max(baselines, key=lambda i: rows[i]["mean"]["score"])
            pairs = [(a, best) for a in others] + pairs
        for a, b in pairs:
            result = bootstrap.compare(
                resampled[a], resampled[b], rows[a]["mean"]["score"], rows[b]["mean"]["score"]
            )  # fmt: skip
            out.append({
                "probe": kind, "a": rows[a]["set"], "b": rows[b]["set"],
                "baseline": rows[b]["set"] in BASELINES, **result,
            })  # fmt: skip
    return out


def _summary(seeds: list[dict]) -> tuple[dict, dict]:
    """(mean, std) over the seeds of each test metric."""
    keys = [k for k in seeds[0]["test"] if k != "examples"]
    values = {k: np.array([r["test"].get(k, np.nan) for r in seeds]) for k in keys}
    return (
        {k: float(np.mean(v)) for k, v in values.items()},
        {k: float(np.std(v)) for k, v in values.items()},
    )


def _distinct(sets: list, log) -> list:
    """The feature sets without repeats: a fine-tuned model's frozen encoder
    is its pretrained model, listed too."""
    out = []
    for fs in sets:
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
            if not storage.exists(named(entry)[1]):
                raise FileNotFoundError(f"{flag}: {named(entry)[1]} does not exist")
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
    examples = feature_sets.load_examples(files, label_sizes, cache_dir, log, frame_stats())

    sets, first = [], None
    for entry in config.models:
        found, model = model_sets(entry, config, files, label_sizes, manifest_spec, log)
        sets += found
        first = first or model
    context = Context(files, label_sizes, cache_dir, config.layer, config.batch_size, log)
    for name in config.baselines:  # in the order asked
        baseline = BASELINES[name]
        x = (
            examples.baselines[name] if baseline.frame_stats
            else baseline.from_model(first, context)
        )  # fmt: skip
        sets.append(feature_sets.FeatureSet(name, x, baseline.what))
    for entry in config.embeddings:
        name, path = named(entry)
        sets.append(feature_sets.load_external(path, examples, name))

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
    if not tasks:
        raise ValueError(f"data={config.data}: no task has train, valid and test examples")
    per_task = len(sets) * len(config.probes) * config.seeds
    progress = Progress("evaluate: probing", len(tasks) * per_task, "probes")
    for number, task in enumerate(tasks):
        # One task that cannot be probed (a degenerate split, labels that
        # disagree within a track) is listed with its reason; the others go on.
        try:
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
