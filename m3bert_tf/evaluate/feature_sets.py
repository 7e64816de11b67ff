"""Clip embeddings of every labeled example, one array per feature set, cached.

    examples = load_examples(files, label_sizes, directory, log)
    examples.track_ids, examples.splits, examples.labels[task], examples.has[task]
    sets = model_sets(path, name, files, examples, layer, directory, log)
    sets[0].name, sets[0].x          # "M2BERT <name>", [N, H]

An example is one record (a chunk of at most 30 s of a track). Its clip
embedding pools every real frame of the whole example (`pooling.py`: mean,
std and max over time, stored; `--pooling` picks which are joined, the same
for every set): the encoder sees it in windows of its training crop,
stitched as `bin/embed` stitches (`windows.plan`), never a random crop.

Feature sets:
- M2BERT <model>: a pretrained encoder's output (`--layer`);
- M3BERT <model>: a fine-tuned model's enrichment layer (its encoder's
  output is that model's M2BERT row: the pretrained encoder, unless blocks
  were unfrozen, when the run's pretrained model is embedded instead);
- random: the first model's encoder architecture with random weights;
- mfcc: the 20 raw MFCCs of the example's frames;
- features: the 324 raw input channels;
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
from m3bert_tf.evaluate import pooling
from m3bert_tf.io import storage
from m3bert_tf.io.progress import Progress
from m3bert_tf.runs.example_cache import count_records, labeled_records

EXAMPLES_NAME = "examples"
FORMAT = 2  # of the cached arrays (2: frame statistics, not means); part of every key


@dataclasses.dataclass
class FeatureSet:
    """One row group of the tables: a name and [N, D] float32 clip embeddings
    ([N, L, D] for a layer profile's weighted row: `evaluate.layers`).

    Attributes:
      pooling: how its frames became `x` (a `pooling.POOLINGS` name), or
        "given" for vectors a user computed.
      profile, layer: the layer profile (the encoder's name) and the layer
        ("L3", "mean", "weighted") of a --layer=all row; "" otherwise.
      kind: "model" (an encoder or a user's embedding), "baseline", or
        "added" (a model joined to a raw baseline: `adds_to` names it).
      curve, step: a learning curve's run name and this point's pretraining
        step (`--models=name=run@step`); "" and -1 otherwise.
    """

    name: str
    x: np.ndarray
    what: str = ""
    pooling: str = ""
    profile: str = ""
    layer: str = ""
    kind: str = "model"
    adds_to: str = ""
    curve: str = ""
    step: int = -1


@dataclasses.dataclass
class Examples:
    """The labeled examples every feature set is aligned with, in shard order.

    Attributes:
      track_ids, splits: [N] str.
      labels: {task: [N, size] float32}; has: {task: [N] bool}.
      baselines: {name: {statistic: [N, D] float32}} of the input-frame
        baselines (`baselines.py`: "mfcc" D = 20, "features" D = 324).
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
    files: list[str], label_sizes: dict, directory: str, log=print, raw_frames=None
) -> Examples:
    """The labeled examples and the input-frame baselines' statistics (cached).

    Args:
      raw_frames: {baseline name: [T, 324] raw float64 -> [T, D]}
        (`baselines.raw_frames`); part of the cache key.
    """
    tasks = list(label_sizes)
    raw_frames = raw_frames or {}

    def compute():
        meta = {"track_ids": [], "splits": []}
        stats = {b: pooling.Accumulator() for b in raw_frames}
        labels = {t: [] for t in tasks}
        has = {t: [] for t in tasks}
        progress = Progress("evaluate: reading examples", count_records(files), "records")
        for n, record in labeled_records(files, label_sizes):
            progress.update(n)
            if record is None:
                continue
            raw = raw_features(record.features.astype(np.float64), record.mean, record.std)
            for name, frames in raw_frames.items():
                stats[name].add(len(meta["splits"]), frames(raw))
            meta["track_ids"].append(record.track_id)
            meta["splits"].append(record.split)
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
        }
        for b, accumulated in stats.items():
            out |= pooling.stats_arrays(f"baseline_{b}", accumulated.result())
        for t in tasks:  # task names are letters, digits and "_"
            out[f"label_{t}"] = np.array(labels[t], np.float32).reshape(
                len(out["splits"]), -1
            )
            out[f"has_{t}"] = np.array(has[t], bool)
        return out

    key = digest(data_description(files, label_sizes), sorted(raw_frames))
    arrays = cached(directory, EXAMPLES_NAME, key, compute, log)
    return Examples(
        arrays["track_ids"].astype(str),
        arrays["splits"].astype(str),
        {t: arrays[f"label_{t}"] for t in tasks},
        {t: arrays[f"has_{t}"] for t in tasks},
        {b: pooling.stats_from(arrays, f"baseline_{b}") for b in raw_frames},
    )


def embed_examples(model, files, label_sizes, layer, batch_size: int = 16,
                   name: str = "model") -> dict:  # fmt: skip
    """{"embedding_<stat>": [N, H] ([N, L, H] for layer "all"; and
    "enrichment_<stat>": [N, E] for a fine-tuned model at layer "last")}:
    each labeled example's statistics (`pooling.STATISTICS`) over its real
    output frames.

    Args:
      model: a `serving.api.Model`.
      layer: "last", "mean" or a block index (`serving.api.parse_layer`).
    """
    from m3bert_tf.serving import outputs

    signature = outputs.signature_for(layer)
    accumulated = {"embedding": pooling.Accumulator(), "enrichment": pooling.Accumulator()}
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
        kept = outputs.reduce_layers(
            outputs.select_frames(out, window, model.frame_stack, signature), layer
        )
        accumulated["embedding"].add(owner, kept["frame_embeddings"])
        if "frame_enrichment" in kept:
            accumulated["enrichment"].add(owner, kept["frame_enrichment"])
    out = {}
    for name, stats in accumulated.items():
        if stats.owners():  # examples in shard order, however windows were batched
            out |= pooling.stats_arrays(name, stats.result(sorted(stats.owners())))
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


def load_external(directory: str, examples: Examples, name: str,
                  pooling_name: str = pooling.DEFAULT_POOLING) -> FeatureSet:  # fmt: skip
    """An external embedding: `<directory>/<track id>.npz` per track (or the
    paths in its index.csv, as bin/embed writes), holding `frame_embeddings`,
    `clip_embedding`, `embedding` or one array (the first of these found). A
    2-D array [frames, D] is pooled over its frames like every other set
    (`pooling_name`); a vector is taken as it is (pooling "given"). Every
    chunk of a track gets the track's vector.

    Raises:
      FileNotFoundError: tracks without a file (the first few named).
      ValueError: a file with no usable array, an empty one or one of rank
        other than 1 or 2, non-finite values, vectors of several widths (the
        file named), or an index.csv entry outside the directory.
    """
    index = _index(directory)
    vectors, missing, given = {}, [], set()
    for track in dict.fromkeys(examples.track_ids):
        path = index.get(track) or os.path.join(directory, *track.split("/")) + ".npz"
        if not os.path.exists(path):
            missing.append(track)
            continue
        with np.load(path) as data:
            names = [n.removesuffix(".npy") for n in data.files]
            keys = [
                k for k in ("frame_embeddings", "clip_embedding", "embedding") if k in names
            ]
            if not keys and len(names) != 1:
                raise ValueError(
                    f"{path}: holds {names}; expected frame_embeddings, clip_embedding, "
                    "embedding or one array"
                )
            value = np.asarray(data[keys[0] if keys else data.files[0]], np.float32)
        if value.ndim not in (1, 2) or not value.size:
            raise ValueError(
                f"embeddings={directory}: {path} holds an array of shape {value.shape}; "
                "expected [frames, D] or [D] with values"
            )
        if not np.isfinite(value).all():
            raise ValueError(
                f"embeddings={directory}: {path} holds non-finite values (NaN or Inf); "
                "a probe cannot judge them"
            )
        if value.ndim == 2:
            vectors[track] = pooling.pool(pooling.frame_statistics(value), pooling_name)
        else:
            vectors[track] = value.reshape(-1)
            given.add(track)
    if missing:
        raise FileNotFoundError(
            f"embeddings={directory}: no embedding for {len(missing)} of "
            f"{len(vectors) + len(missing)} tracks (e.g. {', '.join(missing[:3])})"
        )
    widths = {v.shape for v in vectors.values()}
    if len(widths) > 1 or (given and len(given) < len(vectors)):
        raise ValueError(
            f"embeddings={directory}: vectors of several shapes {sorted(widths)} (frame-level "
            f"arrays for some tracks, clip vectors for {len(given)} others?)"
        )
    x = np.stack([vectors[t] for t in examples.track_ids])
    how = "given" if given else pooling_name
    return FeatureSet(name, x, f"external embeddings from {directory}", how)


def _index(directory: str) -> dict:
    """{track id: npz path} from bin/embed's index.csv, when there is one."""
    import csv

    path = os.path.join(directory, "index.csv")
    if not storage.exists(path):
        return {}
    with storage.open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("track_id") and r.get("file")]
    out = {}
    inside = os.path.abspath(directory)
    for r in rows:
        file = os.path.abspath(os.path.join(directory, r["file"]))
        if os.path.commonpath([inside, file]) != inside:
            raise ValueError(
                f"embeddings={directory}: {path} lists {r['file']!r} for {r['track_id']!r}, "
                "outside its directory; an index names files inside it only"
            )
        out[r["track_id"]] = file
    return out
