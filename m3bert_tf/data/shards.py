"""The shard directory: every name in it (the one owner of its layout, as
`runs/` owns the run directory), what a rerun finds there, and reading it
back; `shard_writer.py` writes one shard and its index.

A shard `shard-00007.tfrecord` is written under a temporary name and renamed
when complete; before the rename, its index `shard-00007.index.json` (the
tracks it holds) is written the same way. So on disk:

- a shard file exists only complete, and its index exists beside it;
- an index without its shard, or a file with our temporary suffix
  (`TMP_SUFFIX`), is debris of a killed run: `scan_output_dir`
  removes it and its tracks are redone. Nothing else is ever removed.

Readers take `*.tfrecord` (or the manifest's shard list) and never see a
half-written file; `list_shards` and `read_manifests` are the reading side.

Each index also holds the sums of its tracks' raw feature statistics per
split ({"frames", "sum", "sum_sq"}), from which the manifest's global
normalization statistics are made, and the shard's size and SHA-256 digest
(`bytes`, `sha256`), copied into the manifest: what every reader checks a
shard against, and what caches of shard contents are keyed by.
"""

import json
import os

from m3bert_tf import schema
from m3bert_tf.io import storage

# The layout: extraction writes these names, every reader reads through them.
SHARD_SUFFIX = ".tfrecord"
SHARD_PATTERN = "shard-{:05d}" + SHARD_SUFFIX
INDEX_SUFFIX = ".index.json"  # beside each shard: its tracks, statistics, size, digest
MANIFEST_NAME = "manifest.json"  # the finished job: shards, counts, statistics, spec
SPEC_NAME = "feature_spec.json"  # the feature spec the directory was made with
TASKS_NAME = "tasks.json"  # the labeled tasks and their classes
SPLITS_NAME = "splits.csv"  # track id -> split, merged over runs
FAILURES_NAME = "failures.jsonl"  # files that failed, one JSON line each
TMP_SUFFIX = storage.TMP_SUFFIX
SET_ASIDE_SUFFIX = ".set-aside"  # a shard not what its index lists, kept for a person


def index_path(shard_path: str) -> str:
    return shard_path[: -len(SHARD_SUFFIX)] + INDEX_SUFFIX


INDEX_FIELDS = ("num_examples", "bytes", "sha256", "tracks", "stats")


def read_index(shard_path: str) -> dict | None:
    """The index of `shard_path`, or None when it has none or one that does
    not add up (tracks' chunks != num_examples, a field missing): the reader
    then counts the shard itself."""
    path = index_path(shard_path)
    if not storage.exists(path):
        return None
    try:
        info = storage.read_json(path)
        chunks = sum(int(t["num_chunks"]) for t in info["tracks"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(info, dict) or set(INDEX_FIELDS) - set(info):
        return None
    return info if chunks == info["num_examples"] else None


def scan_output_dir(output_dir: str, log=None) -> tuple[list[dict], int]:
    """Finds finished shards and removes debris of an interrupted run; a
    shard that is not what its index lists (replaced, cut or corrupted:
    size and SHA-256 checked) or has no index is set aside as
    `<name>.set-aside`, said in a line to `log`, and its tracks count as
    not done. A replacement (`drop_tracks`) killed half-way is finished.

    Returns:
      ([{"shard": name, "num_examples": n, "tracks": [...]}] sorted by name,
       the next free shard number).
    """
    log = log or (lambda message: None)
    if not storage.isdir(output_dir):
        return [], 0
    # "*" skips dot files: a worker's spilled features and framed records
    # (".features-*", ".records-*") need their own pattern.
    for pattern in ("*", ".*"):
        for tmp in storage.glob(os.path.join(output_dir, pattern + TMP_SUFFIX)):
            storage.remove(tmp)
    infos, next_number = {}, 0
    for idx in storage.glob(os.path.join(output_dir, "shard-*" + INDEX_SUFFIX)):
        shard = idx[: -len(INDEX_SUFFIX)] + SHARD_SUFFIX
        next_number = max(next_number, _number(shard) + 1)
        if not storage.exists(shard):
            storage.remove(idx)  # killed between the index and the shard rename
            continue
        infos[os.path.basename(shard)] = storage.read_json(idx)
    for info in list(infos.values()):
        replaced = info.get("replaces")
        if replaced in infos:  # killed before the shard it replaces was removed
            _remove_shard(os.path.join(output_dir, replaced))
            del infos[replaced]
    paths = storage.glob(os.path.join(output_dir, "shard-*" + SHARD_SUFFIX))
    digests = content_digests([p for p in paths if os.path.basename(p) in infos])
    for path in paths:
        name = os.path.basename(path)
        next_number = max(next_number, _number(path) + 1)
        info = infos.get(name)
        why = (
            "it has no index" if info is None
            else "its bytes are not those its index lists (replaced, cut or corrupted)"
            if (storage.size(path), digests[path]) != (info["bytes"], info["sha256"])
            else ""
        )  # fmt: skip
        if why:
            storage.replace(path, path + SET_ASIDE_SUFFIX)
            if info is not None:
                storage.remove(index_path(path))
                del infos[name]
            log(f"{path}: {why}: set aside as {name + SET_ASIDE_SUFFIX}; its tracks "
                "are extracted again")  # fmt: skip
    finished = [{"shard": name, **info} for name, info in sorted(infos.items())]
    return finished, next_number


def _number(shard_path: str) -> int:
    return int(os.path.basename(shard_path)[len("shard-") :][:5])


def _remove_shard(path: str) -> None:
    """A shard's index, then the shard: never a shard without its index
    unless killed in between (then set aside as having none)."""
    storage.remove(index_path(path))
    storage.remove(path)


class DataError(ValueError):
    """Shards that cannot be used as given (missing, unreadable, mixed); the
    message names the directory or the pattern."""


def list_shards(data: str) -> list[str]:
    """Sorted shard paths of a directory, glob or comma-separated globs (their
    file systems registered for the tf.data readers that follow)."""
    found: dict[str, tuple] = {}  # absolute shard path -> (as globbed, the entry)
    for entry in data.split(","):
        part = entry.strip()
        gfile = storage.gfile(part)
        if gfile.isdir(part):
            part = part.rstrip("/") + "/*" + SHARD_SUFFIX
        for f in gfile.glob(part):
            first = found.setdefault(storage.abspath(f), (f, entry.strip()))[1]
            if first != entry.strip():
                raise DataError(
                    f"data={data}: {f} is named by {first!r} and by {entry.strip()!r}; "
                    "give each shard once (its examples would count twice)"
                )
    if not found:
        raise DataError(f"data={data}: no shard files found")
    return sorted(f for f, _ in found.values())


def read_manifests(data: str) -> dict[str, dict]:
    """{shard dir: manifest} for every directory the shards of `data` are in.

    Every shard read must be listed in its directory's manifest with the
    size and content digest it was written with (each file is read once per
    process to check it: `content_digests`), and a directory given whole
    must hold every shard its manifest lists.

    Raises:
      DataError: no shards, a directory without manifest.json, a shard
        missing, truncated, replaced or not in the manifest, shards of
        another feature-spec version (with how to re-extract them), or of
        several feature sets at once.
    """
    import tensorflow as tf

    out = {}
    files = list_shards(data)
    for d in sorted({os.path.dirname(f) for f in files}):
        path = os.path.join(d, MANIFEST_NAME)
        if not tf.io.gfile.exists(path):
            raise DataError(
                f"data: {d} has no {MANIFEST_NAME} (write shards with bin/extract)"
            )
        try:
            with tf.io.gfile.GFile(path) as f:
                manifest = json.load(f)
        except ValueError as e:  # cut short, or not ours
            raise DataError(f"data: {path} is not readable JSON ({e}): {ADVICE}") from None
        version = manifest.get("feature_spec", {}).get("version")
        if version != schema.FEATURE_SPEC_VERSION:
            raise DataError(
                f"data: {d} holds feature spec version {version}, this release reads version "
                f"{schema.FEATURE_SPEC_VERSION} (records with track statistics): re-extract "
                f"the audio into a new directory, e.g. bin/extract --input={manifest.get('input', '...')} "
                f"--output_dir={d.rstrip('/')}-v{schema.FEATURE_SPEC_VERSION}"
            )
        out[d] = manifest
    _verify_shards(data, files, out)
    feature_sets = {m["feature_spec"].get("feature_set") for m in out.values()}
    if len(feature_sets) > 1:
        raise DataError(
            f"data mixes feature sets {sorted(feature_sets)} "
            f"({', '.join(out)}): use shards of one feature set"
        )
    return out


ADVICE = (
    "run bin/extract again with the same --input and --output_dir: it sets aside a "
    "shard that is not what its index lists, extracts its tracks again and "
    "rewrites manifest.json"
)

# (path, size, mtime) -> SHA-256 of what this process read there.
_DIGESTS: dict[tuple, str] = {}


def content_digests(files: list[str]) -> dict[str, str]:
    """{file: SHA-256 of its bytes}, each file read once per process (a file
    whose size, modification time or inode changed is read again:
    `storage.version_key`)."""
    from m3bert_tf.io.progress import Progress

    out, todo = {}, []
    for f in files:
        key = (f, *storage.version_key(f))
        if key in _DIGESTS:
            out[f] = _DIGESTS[key]
        else:
            todo.append((f, key, key[1]))
    total = sum(n for _, _, n in todo)
    progress = Progress("checking shards", total >> 20, "MiB") if total > 2**30 else None
    done = 0
    for f, key, n in todo:
        out[f] = _DIGESTS[key] = storage.sha256(f)
        done += n
        if progress is not None:
            progress.update(done >> 20)
    return out


def _verify_shards(data: str, files: list[str], manifests: dict[str, dict]) -> None:
    """Every shard read is listed in its manifest with its size and digest; a
    directory given whole has every listed shard. Raises DataError naming the shard."""
    import tensorflow as tf

    listed = {d: {s["name"]: s for s in m.get("shards", [])} for d, m in manifests.items()}
    entries = {}
    for f in files:
        d, name = os.path.dirname(f), os.path.basename(f)
        entry = entries[f] = listed[d].get(name)
        if entry is None:
            raise DataError(
                f"data: {f} is not in {d}/{MANIFEST_NAME} (a foreign file, or an "
                "extraction still running?)"
            )
        size = tf.io.gfile.stat(f).length
        if entry.get("bytes") is not None and size != entry["bytes"]:
            raise DataError(
                f"data: {f} has {size} bytes, {MANIFEST_NAME} says {entry['bytes']} "
                f"(truncated or replaced): {ADVICE}"
            )
    for f, digest in content_digests(files).items():
        want = entries[f].get("sha256")
        if want is not None and digest != want:
            raise DataError(
                f"data: {f} is not the shard {MANIFEST_NAME} lists (same name and "
                f"size, other contents: SHA-256 {digest[:12]}..., written as {want[:12]}...; "
                f"replaced or corrupted): {ADVICE}"
            )
    for part in data.split(","):
        part = part.strip().rstrip("/")
        if part in listed:  # a directory given whole
            missing = sorted(set(listed[part]) - {os.path.basename(f) for f in files})
            if missing:
                raise DataError(
                    f"data: {part}/{missing[0]} is listed in {MANIFEST_NAME} but missing "
                    f"({len(missing)} shard(s) missing): {ADVICE}"
                )


def name_corrupt_shard(data: str, error) -> DataError:
    """The DataError for a `tf.errors.DataLossError` met while reading `data`:
    each shard is read through to find the one that fails, and named."""
    import tensorflow as tf

    for f in list_shards(data):
        try:
            for _ in tf.data.TFRecordDataset(f).batch(1024):
                pass
        except tf.errors.DataLossError as e:
            return DataError(
                f"data: {f} is corrupted ({e.message.splitlines()[0]}): {ADVICE}"
            )
    return DataError(
        f"data={data}: a shard is corrupted ({error.message.splitlines()[0]}): {ADVICE}"
    )


def normalization_stats(manifests: dict[str, dict]) -> dict:
    """The global statistics of the data `read_manifests` read: its manifests'
    combined, frame-weighted."""
    from m3bert_tf.data.normalization import combine_stats

    return combine_stats([m["normalization_stats"] for m in manifests.values()])
