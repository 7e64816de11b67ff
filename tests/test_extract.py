"""The extraction job: shards, manifest, bad input, labels, resume after a kill."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile
from conftest import ROOT, run_bin, write_audio

from m3bert_tf import extract, schema
from m3bert_tf.data import records, shards


def read_all(output_dir):
    """{(track_id, chunk_index): sha1 of features} over every shard in the dir."""
    out = {}
    for shard in sorted(glob.glob(os.path.join(output_dir, "*" + shards.SHARD_SUFFIX))):
        for ex in records.read_examples(shard):
            digest = hashlib.sha1(ex[schema.FEATURES_KEY].tobytes()).hexdigest()
            key = (ex[schema.TRACK_ID_KEY], int(ex[schema.CHUNK_INDEX_KEY]))
            assert key not in out, f"{key} written twice"
            out[key] = digest
    return out


def config(input_path, output_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress_interval", 0.0)
    return extract.ExtractConfig(
        input=str(input_path), output_dir=str(output_dir), **kwargs
    )


def test_extracts_every_file_into_checked_shards(audio_dir, tmp_path):
    out = tmp_path / "shards"
    manifest = extract.run_extract(config(audio_dir, out, shard_size=2))
    examples = read_all(out)
    assert sorted(examples) == [("a", 0), ("b", 0), ("c", 0), ("sub/d", 0)]
    counts = manifest["counts"]
    assert counts["tracks"] == 4 and counts["chunks"] == 4 and counts["failures"] == 0
    # shard_size=2: shards close at 2 examples.
    assert [s["num_examples"] for s in manifest["shards"]] == [2, 2]
    on_disk = json.loads((out / shards.MANIFEST_NAME).read_text())
    assert on_disk["feature_spec"]["num_features"] == 324
    assert on_disk["feature_spec"]["version"] == schema.FEATURE_SPEC_VERSION
    assert on_disk["package_version"]
    assert abs(on_disk["counts"]["audio_hours"] * 3600 - 15.5) < 0.2
    frames = sum(
        int(ex[schema.NUM_FRAMES_KEY])
        for s in on_disk["shards"]
        for ex in records.read_examples(str(out / s["name"]))
    )
    assert frames == on_disk["counts"]["frames"]
    assert not glob.glob(str(out / ("*" + shards.TMP_SUFFIX)))


def test_any_worker_count_gives_byte_identical_shards(audio_dir, tmp_path):
    """Workers encode and frame whole tracks; the parent appends them in input
    order: 1, 2 and 3 workers write the same bytes (shards, indexes)."""
    out = {}
    for workers in (1, 2, 3):
        d = tmp_path / str(workers)
        extract.run_extract(config(audio_dir, d, num_workers=workers, shard_size=2))
        out[workers] = {
            name: (d / name).read_bytes()
            for name in sorted(os.listdir(d))
            if name.endswith((".tfrecord", ".index.json"))
        }
    assert len(out[1]) == 4 and out[1] == out[2] == out[3]
    assert read_all(tmp_path / "1") == read_all(tmp_path / "3")


def make_bad_dir(root):
    write_audio(str(root / "good1.wav"), 3.0, seed=1)
    write_audio(str(root / "good2.flac"), 2.0, 22050, seed=2)
    (root / "zero.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio\n" * 20)
    (root / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(5000))
    header = open(root / "good1.wav", "rb").read()[:40]
    (root / "truncated.wav").write_bytes(header)
    soundfile.write(str(root / "silent.wav"), np.zeros(44100 * 3, np.float32), 44100)
    write_audio(str(root / "short.wav"), 0.3, seed=3)


def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    make_bad_dir(tmp_path / "in")
    manifest = extract.run_extract(config(tmp_path / "in", tmp_path / "out"))
    assert sorted(k[0] for k in read_all(tmp_path / "out")) == ["good1", "good2"]
    reasons = {os.path.basename(f["path"]): f["reason"] for f in manifest["failures"]}
    assert set(reasons) == {
        "zero.wav", "text.wav", "corrupt.flac", "truncated.wav", "silent.wav", "short.wav"
    }  # fmt: skip
    assert "empty file" in reasons["zero.wav"]
    assert "not decodable" in reasons["text.wav"]
    assert "not decodable" in reasons["corrupt.flac"]
    assert "silent" in reasons["silent.wav"]
    assert "too short" in reasons["short.wav"]
    for name, reason in reasons.items():
        assert name in reason  # every reason names its file
    logged = capsys.readouterr().err
    assert all(f"skipped {tmp_path / 'in' / name}" in logged for name in reasons)
    assert manifest["counts"]["failures"] == 6


def test_bin_extract_exit_status_and_strict(tmp_path):
    (tmp_path / "in").mkdir()
    make_bad_dir(tmp_path / "in")
    args = ["--input", str(tmp_path / "in"), "--num_workers=1"]
    res = subprocess.run(
        run_bin("extract", *args, f"--output_dir={tmp_path / 'a'}"),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1, res.stderr
    assert "failures 6" in res.stdout
    res = subprocess.run(
        run_bin("extract", *args, f"--output_dir={tmp_path / 'b'}", "--strict"),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "stopped at the first failure (strict)" in res.stderr
    assert "Traceback" not in res.stderr


def test_csv_manifest_carries_labels_and_splits(audio_dir, tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,track_id,split,task,label\n"
        "audio/a.wav,song-a,train,genre,rock\n"
        "audio/a.wav,song-a,train,valence,0.5\n"
        "audio/c.ogg,song-c,test,genre,jazz\n"
    )
    extract.run_extract(config(csv_path, tmp_path / "out"))
    (shard,) = glob.glob(str(tmp_path / "out" / "*.tfrecord"))
    got = {ex[schema.TRACK_ID_KEY]: ex for ex in records.read_examples(shard)}
    assert json.loads(got["song-a"][schema.LABELS_KEY]) == {
        "genre": "rock",
        "valence": "0.5",
    }
    assert (
        got["song-a"][schema.SPLIT_KEY] == "train"
        and got["song-c"][schema.SPLIT_KEY] == "test"
    )


def test_csv_without_path_column_names_the_file(tmp_path):
    (tmp_path / "x.csv").write_text("file,label\na.wav,1\n")
    with pytest.raises(ValueError, match=r"x.csv: needs a 'path' column"):
        extract.find_tracks(config(tmp_path / "x.csv", tmp_path / "out"))


def test_rerun_skips_done_work_and_new_files_are_added(audio_dir, tmp_path, capsys):
    out = tmp_path / "out"
    extract.run_extract(config(audio_dir, out))
    before = read_all(out)
    manifest = extract.run_extract(config(audio_dir, out))
    assert manifest["run"]["files"] == 0 and read_all(out) == before
    write_audio(str(audio_dir / "e.wav"), 2.0, seed=7)
    manifest = extract.run_extract(config(audio_dir, out))
    assert manifest["run"]["files"] == 1 and manifest["counts"]["tracks"] == 5


def test_other_feature_set_in_same_dir_is_refused(audio_dir, tmp_path):
    from m3bert_tf.features.frames import FeatureConfig

    extract.run_extract(config(audio_dir, tmp_path / "out"))
    with pytest.raises(ValueError, match="another spec.*feature_set"):
        extract.run_extract(
            config(
                audio_dir, tmp_path / "out", features=FeatureConfig(feature_set="authors")
            )
        )


def test_a_version_2_directory_is_refused_with_how_to_re_extract(audio_dir, tmp_path):
    """Shards without track statistics (spec 2) are neither resumed nor read."""
    from m3bert_tf.data import shards

    out = tmp_path / "out"
    extract.run_extract(config(audio_dir, out))
    for name in ("feature_spec.json", "manifest.json"):
        stored = json.loads((out / name).read_text())
        spec = stored.get("feature_spec", stored)
        spec["version"] = 2
        (out / name).write_text(json.dumps(stored))
    with pytest.raises(
        ValueError, match="version 2.*extract the audio again into a new output_dir"
    ):
        extract.run_extract(config(audio_dir, out))
    with pytest.raises(ValueError, match=f"{out} holds feature spec version 2.*re-extract"):
        shards.read_manifests(str(out))


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_same_examples(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(24):
        write_audio(str(src / f"t{i:02d}.wav"), 20.0 + i, seed=i)
    reference = tmp_path / "reference"
    extract.run_extract(config(src, reference))

    out = tmp_path / "out"
    argv = run_bin("extract", f"--input={src}", f"--output_dir={out}", "--shard_size=1")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(argv + ["--num_workers=1"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(glob.glob(str(out / "*.tfrecord"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / shards.MANIFEST_NAME).exists(), "the run finished before the kill"
    partial = len(glob.glob(str(out / "*.tfrecord")))
    assert 3 <= partial < 24

    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # shard_size=1: every finished shard holds exactly one track.
    assert f"; {partial} already done ({partial} shards" in res.stderr
    assert read_all(out) == read_all(reference)
    # Nor a worker's spilled features or framed records (dot files).
    assert not [n for n in os.listdir(out) if n.endswith(shards.TMP_SUFFIX)]


def test_debris_of_a_killed_run_is_removed_and_redone(audio_dir, tmp_path):
    out = tmp_path / "out"
    extract.run_extract(config(audio_dir, out, shard_size=1))
    complete = read_all(out)
    # Simulate kills at every point of a shard's life: a half-written shard, an
    # index whose shard was never renamed, and a half-written manifest.
    shard = out / "shard-00003.tfrecord"
    os.replace(shard, str(shard) + shards.TMP_SUFFIX)
    (out / ("manifest.json" + shards.TMP_SUFFIX)).write_text("{")
    for name in (".features-x", ".records-y"):  # a killed worker's files
        (out / (name + shards.TMP_SUFFIX)).write_bytes(b"\0" * 64)
    manifest = extract.run_extract(config(audio_dir, out, shard_size=1))
    assert manifest["run"]["files"] == 1
    assert not [n for n in os.listdir(out) if n.endswith(shards.TMP_SUFFIX)]
    assert sorted(read_all(out)) == sorted(complete)
    assert len(glob.glob(str(out / "*.index.json"))) == len(manifest["shards"]) == 4


def test_a_bad_label_is_reported_before_any_audio_is_read(tmp_path, monkeypatch):
    """The label is checked first: a missing file with a bad label fails on the
    label, so a bad label never costs a featurization."""
    from m3bert_tf.datasets.base import LoadResult, Track
    from m3bert_tf.tasks import TaskSpec

    spec = TaskSpec("emotion", "regression", outputs=("valence", "arousal"))
    bad = Track(str(tmp_path / "never-read.wav"), "t", "train", {"emotion": "0.5"})
    from m3bert_tf.extract import job

    monkeypatch.setattr(
        job, "find_tracks", lambda config: LoadResult([bad], {"emotion": spec})
    )
    manifest = extract.run_extract(config(tmp_path, tmp_path / "out"), log=lambda m: None)
    (failure,) = manifest["failures"]
    assert failure["path"] == bad.path and "bad label" in failure["reason"]
    assert "has 1 values, needs 2" in failure["reason"]


def test_a_staged_track_holds_the_bytes_the_local_job_writes(audio_dir, tmp_path):
    """The engines' per-track step (`staged.stage_track`) stages exactly the
    framed records of that track in the local job's shard, and its entry;
    a file that cannot be used is staged as a failure naming it."""
    from m3bert_tf.data import wire
    from m3bert_tf.extract import staged
    from m3bert_tf.features.frames import FeatureExtractor

    extract.run_extract(config(audio_dir, tmp_path / "out"), log=lambda m: None)
    (shard,) = glob.glob(str(tmp_path / "out" / ("*" + shards.SHARD_SUFFIX)))
    first = shards.read_index(shard)["tracks"][0]
    with open(shard, "rb") as f:
        framed = [record for record, _ in wire.unframe(f)]
    tracks = extract.find_tracks(config(audio_dir, tmp_path / "unused")).tracks
    assert first["track_id"] == tracks[0].track_id
    stage = tmp_path / "staging"
    stage.mkdir()
    missing = type(tracks[0])(str(tmp_path / "missing.wav"), "x")
    jobs = [
        staged.TrackJob(n, t, {}) for n, t in enumerate([tracks[0], missing, tracks[1]])
    ]
    for job in jobs[:2]:
        staged.stage_track(job, str(stage), FeatureExtractor(), str(stage))
    records = (stage / "00000000.records").read_bytes()
    assert records == b"".join(framed[: first["num_chunks"]])
    done, failed, left = staged.read_staged(str(stage), jobs)
    assert [n for n, _ in done] == [0] and done[0][1]["entry"] == first
    assert done[0][1]["records"] == first["num_chunks"]
    assert [p.path for p in failed] == [missing.path] and [j.number for j in left] == [2]
