"""What an extraction job writes besides the shards: manifest.json (spec,
tasks, counts, global statistics, shards, failures), splits.csv, and the
summary lines it prints."""

import csv
import datetime
import io
import os

from m3bert_tf import schema
from m3bert_tf.data.shards import SPLITS_NAME
from m3bert_tf.datasets.base import Track
from m3bert_tf.io import storage
from m3bert_tf.version import __version__


def write_splits(output_dir: str, tracks: list[Track]) -> None:
    """splits.csv next to the shards: track_id, split, path of every input track.

    Merged with what earlier runs into the same directory wrote (a second
    input adds its tracks; a path given again takes its new row).
    """
    path = os.path.join(output_dir, SPLITS_NAME)
    rows = {}
    if storage.exists(path):
        with storage.open(path, newline="") as f:
            rows = {r["path"]: r for r in csv.DictReader(f)}
    for t in tracks:
        rows[t.path] = {"track_id": t.track_id, "split": t.split, "path": t.path}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["track_id", "split", "path"])
    writer.writeheader()
    writer.writerows(sorted(rows.values(), key=lambda r: (r["track_id"], r["path"])))
    storage.write_atomic(path, text.getvalue())


def build_manifest(config, spec, task_specs, finished, failures) -> dict:
    """The manifest.json content: spec, tasks, versions, counts, shards and failures.

    label_counts: {task: {split: examples}}, what fine-tuning mixes by.
    normalization_stats: {"split", "frames", "mean", "std"}: the raw features'
    statistics over the train split's tracks (all tracks when none is train),
    for `global` normalization.
    """
    from m3bert_tf.data.normalization import add_sums, stats_from_sums

    tracks = [t for s in finished for t in s["tracks"]]
    per_split: dict[str, dict] = {}
    for s in finished:
        for split, sums in s.get("stats", {}).items():
            per_split[split] = add_sums(per_split.get(split), sums)
    if "train" in per_split:
        stats_split, sums = "train", per_split["train"]
    else:
        stats_split, sums = "all", None
        for part in per_split.values():
            sums = add_sums(sums, part)
    label_counts: dict = {}
    for t in tracks:
        for task in t.get("tasks", []):
            per_split = label_counts.setdefault(task, {})
            per_split[t["split"]] = per_split.get(t["split"], 0) + t["num_chunks"]
    frames = sum(t["num_frames"] for t in tracks)
    # A track whose chunks lie in several shards (Beam decides) is listed in each.
    unique = {(t["track_id"], t["source_path"]): t for t in tracks}
    return {
        "package": "m3bert_tf",
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "input": config.source,
        "feature_spec": spec,
        "tasks": task_specs,
        "label_counts": label_counts,
        "counts": {
            "tracks": len(unique),
            "chunks": sum(t["num_chunks"] for t in tracks),
            "frames": frames,
            "hours": round(frames / schema.FRAMES_PER_SECOND / 3600, 4),
            "audio_hours": round(sum(t["duration_s"] for t in unique.values()) / 3600, 4),
            "failures": len(failures),
        },
        "normalization_stats": (
            {"split": stats_split, **stats_from_sums(sums)} if sums is not None else None
        ),
        "shards": [
            {
                "name": s["shard"],
                "num_examples": s["num_examples"],
                "bytes": s.get("bytes"),
                "sha256": s.get("sha256"),
            }  # fmt: skip
            for s in sorted(finished, key=lambda s: s["shard"])
        ],
        "failures": failures,
    }


def summarize(manifest: dict) -> str:
    """A few human lines about a finished job."""
    c = manifest["counts"]
    lines = [
        f"tracks {c['tracks']}, chunks {c['chunks']}, frames {c['frames']}, "
        f"hours {c['hours']:.3f}, shards {len(manifest['shards'])}, failures {c['failures']}"
    ]
    run = manifest.get("run")
    if run and run["seconds"] > 0 and run["audio_seconds"] > 0:
        lines.append(
            f"this run: {run['files']} files in {run['seconds']:.1f} s with "
            f"{run.get('runner') or str(run['num_workers']) + ' workers'} = "
            f"{run['audio_seconds'] / run['seconds']:.0f}x "
            f"real time ({run['audio_seconds'] / 3600 / run['seconds']:.4f} audio-h/s)"
        )
    for f in manifest["failures"]:
        lines.append(f"failed: {f['reason']}")
    return "\n".join(lines)
