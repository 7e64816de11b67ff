"""Clip embeddings of every labeled example, one array per feature set, cached.

    examples = load_examples(files, label_sizes, directory, log)
    examples.track_ids, examples.splits, examples.labels[task], examples.has[task]
    sets = model_sets(path, name, files, examples, layer, directory, log)
    sets[0].name, sets[0].x          # "M2BERT <name>", [N, H]

An example is one record (a chunk of at most 30 s of a track). Its clip
embedding is the mean over every real frame of the whole example: the
encoder sees it in windows of its training crop, stitched as `bin/embed`
stitches (`windows.plan`), never a random crop.

Feature sets:
- M2BERT <model>: a pretrained encoder's output (`--layer`);
- M3BERT <model>: a fine-tuned model's enrichment layer (its encoder's
  output is that model's M2BERT row: the pretrained encoder, unless blocks
  were unfrozen, when the run's pretrained model is embedded instead);
- random: the first model's encoder architecture with random weights;
- mfcc: mean and std over the example's frames of the 20 raw MFCCs;
- features: mean and std of the 324 raw input channels;
- external: a directory of `<track id>.npz` a user computed (`load_external`).

Raw features come back from the stored (per-track CMVN'd) ones and the
track statistics in every record. Everything computed is cached under
`directory` as `<set>-<key>.npz`; the key is a digest of the model's files,
the layer, the tasks and every shard's name and size.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from m3bert_tf.data.normalization import raw_features
from m3bert_tf.io import storage
from m3bert_tf.io.progress import Progress
from m3bert_tf.runs.example_cache import count_records, labeled_records

EXAMPLES_NAME = "examples"
FORMAT = 1  # of the cached arrays; part of every key


@dataclasses.dataclass
class FeatureSet:
    """One row group of the tables: a name and [N, D] float32 clip embeddings
    ([N, L, D] for a layer profile's weighted row: `evaluate.layers`).

    Attributes:
      profile, layer: the layer profile (the encoder's name) and the layer
        ("L3", "mean", "weighted") of a --layer=all row; "" otherwise.
    """

    name: str
    x: np.ndarray
    what: str = ""
    profile: str = ""
    layer: str = ""


@dataclasses.dataclass
class Examples:
    """The labeled examples every feature set is aligned with, in shard order.

    Attributes:
      track_ids, splits: [N] str.
      labels: {task: [N, size] float32}; has: {task: [N] bool}.
      baselines: {name: [N, D] float32} of the input-frame baselines
        (`baselines.py`: {"mfcc": [N, 40], "features": [N, 648]}, ...).
    """

    track_ids: np.ndarray
    splits: np.ndarray
    labels: dict
    has: dict
    baselines: dict

    def __len__(self):
        return len(self.track_ids)


class RecordTrack:
    """A record's features behind the interface `serving.api.Model` reads a
    spilled track through (`num_frames`, `raw`, `normalized`)."""

    def __init__(self, record):
        self.name = record.track_id
        self.num_frames = len(record.features)
        self._stored, self._mean, self._std = record.features, record.mean, record.std

    def normalized(self, start: int, stop: int) -> np.ndarray:
        return self._stored[start:stop]

    def raw(self, start: int, stop: int) -> np.ndarray:
        return raw_features(self._stored[start:stop], self._mean, self._std)


def digest(*parts) -> str:
    """A short hex digest of JSON-able parts and the cache format (model files
    enter through `runs.model_digest`, shards through `data_description`)."""
    h = hashlib.sha256(json.dumps([FORMAT, parts], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def data_description(files: list[str], label_sizes: dict) -> list:
    """What every cached array depends on: the shards' contents (SHA-256, in
    reading order) and the tasks."""
    from m3bert_tf.data.shards import content_digests

    digests = content_digests(files)
    return [[digests[f] for f in files], sorted(label_sizes.items())]


def cached(directory: str, name: str, key: str, compute, log) -> dict:
    """The arrays of `compute()` stored as `<directory>/<name>-<key>.npz`
    (written atomically; another key's file of `name` is replaced)."""
    path = os.path.join(directory, f"{name}-{key}.npz")
    if storage.exists(path):
        try:
            with storage.open(path, "rb") as f, np.load(f) as data:
                arrays = {k: data[k] for k in data.files}
            log(f"{name}: from the cache {path}")
            return arrays
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            log(f"{name}: the cache file {path} is unreadable ({e}): computing it again")
    arrays = compute()
    storage.makedirs(directory)
    for old in storage.glob(os.path.join(directory, f"{name}-*.npz")):
        storage.remove(old)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    storage.write_atomic(path, buffer.getvalue())
    return arrays


def load_examples(
    files: list[str], label_sizes: dict, directory: str, log=print, frame_stats=None
) -> Examples:
    """The labeled examples and the input-frame baselines (cached).

    Args:
      frame_stats: {baseline name: [T, 324] raw float64 -> [D]}
        (`baselines.frame_stats`); part of the cache key.
    """
    tasks = list(label_sizes)
    frame_stats = frame_stats or {}

    def compute():
        meta = {"track_ids": [], "splits": []} | {f"baseline_{b}": [] for b in frame_stats}
        labels = {t: [] for t in tasks}
        has = {t: [] for t in tasks}
        progress = Progress("evaluate: reading examples", count_records(files), "records")
        for n, record in labeled_records(files, label_sizes):
            progress.update(n)
            if record is None:
                continue
            raw = raw_features(record.features.astype(np.float64), record.mean, record.std)
            meta["track_ids"].append(record.track_id)
            meta["splits"].append(record.split)
            for name, stats in frame_stats.items():
                meta[f"baseline_{name}"].append(stats(raw))
            for t, (value, present) in record.labels.items():
                labels[t].append(value)
                has[t].append(bool(present))
        if not meta["splits"]:
            from m3bert_tf.data.shards import DataError

            raise DataError(
                f"no train/valid/test example is labeled for {', '.join(tasks)}"
            )
        out = {
            "track_ids": np.array(meta["track_ids"]),
            "splits": np.array(meta["splits"]),
            **{
                f"baseline_{b}": np.array(meta[f"baseline_{b}"], np.float32)
                for b in frame_stats
            },
        }
        for t in tasks:  # task names are letters, digits and "_"
            out[f"label_{t}"] = np.array(labels[t], np.float32).reshape(
                len(out["splits"]), -1
            )
            out[f"has_{t}"] = np.array(has[t], bool)
        return out

    key = digest(data_description(files, label_sizes), sorted(frame_stats))
    arrays = cached(directory, EXAMPLES_NAME, key, compute, log)
    return Examples(
        arrays["track_ids"].astype(str),
        arrays["splits"].astype(str),
        {t: arrays[f"label_{t}"] for t in tasks},
        {t: arrays[f"has_{t}"] for t in tasks},
        {b: arrays[f"baseline_{b}"] for b in frame_stats},
    )


def embed_examples(model, files, label_sizes, layer, batch_size: int = 16,
                   name: str = "model") -> dict:  # fmt: skip
    """{"embedding": [N, H] (and "enrichment": [N, E] for a fine-tuned model
    at layer "last")}: each labeled example's mean over its real output frames.

    Args:
      model: a `serving.api.Model`.
      layer: "last", "mean" or a block index (`serving.api.parse_layer`).
    """
    from m3bert_tf.serving import api

    signature = api.signature_for(layer)
    sums: dict[int, dict] = {}
    counts: dict[int, int] = {}
    progress = Progress(f"evaluate: embedding with {name}", count_records(files), "records")

    def items():
        i = -1
        for n, record in labeled_records(files, label_sizes):
            progress.update(n)
            if record is None:
                continue
            i += 1
            track = RecordTrack(record)
            for w in model.plan(track.num_frames):
                yield i, track, w

    for owner, window, out in model.batches(items(), signature, batch_size):
        kept = api.reduce_layers(
            api.select_frames(out, window, model.frame_stack, signature), layer
        )
        into = sums.setdefault(owner, {})
        for key, value in kept.items():
            into[key] = into.get(key, 0.0) + value.astype(np.float64).sum(0)
        counts[owner] = counts.get(owner, 0) + len(kept["frame_embeddings"])
    owners = sorted(sums)
    out = {
        "embedding": np.array(
            [sums[i]["frame_embeddings"] / counts[i] for i in owners], np.float32
        )
    }
    if owners and "frame_enrichment" in sums[owners[0]]:
        out["enrichment"] = np.array(
            [sums[i]["frame_enrichment"] / counts[i] for i in owners], np.float32
        )
    return out


def random_twin(model, seed: int = 0):
    """A `serving.api.Model` with `model`'s encoder architecture and random
    weights (Keras' initializers, drawn from `seed`): the control for what
    pretraining added.

    Raises:
      FileNotFoundError: an export whose source run is gone (its encoder
        config lives there).
    """
    from m3bert_tf import runs
    from m3bert_tf.models.encoder import M3BertEncoder, encoder_inputs
    from m3bert_tf.models.seeding import seed_weights
    from m3bert_tf.serving import api

    run_dir = model.source
    if not storage.exists(os.path.join(run_dir, runs.CONFIG_NAME)):
        run_dir = model.info.get("source_run", "")
    if not run_dir or not storage.exists(os.path.join(run_dir, runs.CONFIG_NAME)):
        raise FileNotFoundError(
            f"{model.source}: the random baseline builds the first model's encoder from its "
            f"run directory, and the export's source run {run_dir or '(none)'} is not here"
        )
    trained = runs.load_encoder(run_dir)
    twin = M3BertEncoder.from_config(trained.get_config())
    twin(encoder_inputs(twin))
    seed_weights(twin, seed)
    info = {**model.info, "kind": "pretrained", "enrichment_dim": None, "tasks": []}
    return api.Model(api.KerasBackend(twin), info, f"random {model.source}")


def load_external(directory: str, examples: Examples, name: str) -> FeatureSet:
    """An external embedding: `<directory>/<track id>.npz` per track (or the
    paths in its index.csv, as bin/embed writes), holding `clip_embedding`,
    `embedding` or one array; a 2-D array is averaged over its first axis
    (frames). Every chunk of a track gets the track's vector.

    Raises:
      FileNotFoundError: tracks without a file (the first few named).
    """
    index = _index(directory)
    vectors, missing = {}, []
    for track in dict.fromkeys(examples.track_ids):
        path = index.get(track) or os.path.join(directory, *track.split("/")) + ".npz"
        if not os.path.exists(path):
            missing.append(track)
            continue
        with np.load(path) as data:
            keys = [k for k in ("clip_embedding", "embedding") if k in data.files]
            if not keys and len(data.files) != 1:
                raise ValueError(
                    f"{path}: holds {data.files}; expected clip_embedding, embedding or one array"
                )
            value = np.asarray(data[keys[0] if keys else data.files[0]], np.float32)
        vectors[track] = value.mean(0) if value.ndim == 2 else value.reshape(-1)
    if missing:
        raise FileNotFoundError(
            f"embeddings={directory}: no embedding for {len(missing)} of "
            f"{len(vectors) + len(missing)} tracks (e.g. {', '.join(missing[:3])})"
        )
    widths = {v.shape for v in vectors.values()}
    if len(widths) > 1:
        raise ValueError(
            f"embeddings={directory}: vectors of several shapes {sorted(widths)}"
        )
    x = np.stack([vectors[t] for t in examples.track_ids])
    return FeatureSet(name, x, f"external embeddings from {directory}")


def _index(directory: str) -> dict:
    """{track id: npz path} from bin/embed's index.csv, when there is one."""
    import csv

    path = os.path.join(directory, "index.csv")
    if not storage.exists(path):
        return {}
    with storage.open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        r["track_id"]: os.path.join(directory, r["file"])
        for r in rows
        if r.get("track_id") and r.get("file")
    }
