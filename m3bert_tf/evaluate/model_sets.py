"""The feature sets of the models `bin/evaluate` is given.

    entries = curve_entries(config.models)       # run@every -> run@step, ...
    sets, model = model_sets(entry, config, files, label_sizes, spec, log, manifests)

A pretraining run or export gives its M2BERT row (`--layer`; a layer
profile for "all"); a `run@step` snapshot gives a learning curve's point; a
fine-tuned run gives its M3BERT row (the enrichment layer) and its frozen
encoder's M2BERT row. Embeddings are cached by the model files' content,
the layer and the shards (`feature_sets.cached`), and pooled alike
(`pooling.py`).
"""

import functools
import os
import re

from m3bert_tf import runs
from m3bert_tf.evaluate import feature_sets, layers, pooling
from m3bert_tf.io import storage


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


def curve_entries(entries) -> list[str]:
    """`models` entries with every `run@every` expanded into one `run@step`
    per snapshot the run kept (`runs.snapshot_steps`), named `name@step`.

    Raises:
      FileNotFoundError: a run without snapshots (bin/pretrain --snapshot_every).
    """
    out = []
    for entry in entries:
        name, path = named(entry)
        run_dir, step = runs.at_step(path, allow_every=True)
        if step != "every":
            out.append(entry)
            continue
        steps = runs.snapshot_steps(run_dir)
        if not steps:
            raise FileNotFoundError(
                f"models: {run_dir} kept no encoder snapshots (pretrain it with "
                "--snapshot_every=N to draw a learning curve)"
            )
        base = name.removesuffix("@every")
        out += [f"{base}@{s}={run_dir}@{s}" for s in steps]
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def tuned_on(model, manifests: dict) -> bool:
    """Whether a fine-tuned model was fine-tuned on shards (by content: the
    SHA-256 in their manifests) that `manifests` list too."""
    from m3bert_tf.data import shards

    data = model.info.get("config", {}).get("data")
    if not data:
        return False
    try:
        theirs = shards.read_manifests(data)
    except (OSError, ValueError):  # its data is gone: nothing to compare
        return False

    def digests(found):
        return {s.get("sha256") for m in found.values() for s in m.get("shards", [])}

    return bool((digests(theirs) & digests(manifests)) - {None})


def model_sets(entry: str, config, files, label_sizes, manifest_spec, log,
               manifests=None) -> tuple:  # fmt: skip
    """(feature sets of one model, the loaded `api.Model`).

    Under `--folds`, a fine-tuned model's M3BERT row is left out (and said)
    when it was fine-tuned on the evaluated shards: the folds test every
    track, those whose labels its heads and enrichment layer learned too.
    """
    from m3bert_tf.serving import api

    name, path = named(entry)
    model = api.load(path)
    step = runs.at_step(path)[1]
    runs.check_same_features(
        model.info["input_spec"].get("feature_spec"), manifest_spec, config.data,
        f"the model models={path} was trained on",
    )  # fmt: skip
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

    def pooled(layer, label, prefix="embedding"):
        stats = pooling.stats_from(embedded(layer, label), prefix)
        return pooling.pool(stats, config.pooling)

    layer = model.check_layer(config.layer)
    what = f"layer {layer}"
    if model.kind != "finetuned":
        sets = layers.encoder_sets(
            f"M2BERT {name}", pooled(layer, name), what, config.pooling
        )
        for fs in sets if step is not None else ():  # a point of a learning curve
            fs.curve, fs.step = name.rsplit("@", 1)[0], step
        return sets, model
    out = [
        feature_sets.FeatureSet(
            f"M3BERT {name}", pooled("last", name, "enrichment"), "enrichment layer",
            config.pooling,
        )
    ]  # fmt: skip
    if config.folds and tuned_on(model, manifests or {}):
        log(
            f"M3BERT {name}: left out: it was fine-tuned on these shards' labels, and "
            f"--folds={config.folds} tests every track, those it learned too (judge it "
            "with --folds=0, on the test split its fine-tuning never saw)"
        )
        out = []
    tuned = model.info.get("config", {})
    if not tuned.get("unfreeze_top_blocks"):
        # The frozen encoder is the pretrained one: its rows are the M2BERT rows.
        x = pooled(layer, name)
        out = (
            layers.encoder_sets(
                f"M2BERT {name}", x, what + " (frozen encoder)", config.pooling
            )
            + out
        )
    elif tuned.get("pretrained") and storage.exists(tuned["pretrained"]):
        sets, _ = model_sets(
            tuned["pretrained"], config, files, label_sizes, manifest_spec, log, manifests
        )
        out = sets + out
    else:
        log(f"{path}: blocks were unfrozen and its pretrained run is gone: no M2BERT row")
    return out, model
