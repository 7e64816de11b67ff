"""Faults and misuse that used to lose data or time silently (issue "Nothing
lost, nothing silent"), each reproduced with the real thing: two real
processes, a file truncated on disk, a symlink loop on disk."""

import glob
import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import ROOT, run_bin, user_env, write_audio

from m3bert_tf import extract, extract_manifest, locks, schema
from m3bert_tf.datasets import csv_manifest

ENV = user_env()


def shard_bytes(directory):
    return {
        os.path.basename(p): open(p, "rb").read()
        for p in sorted(glob.glob(os.path.join(directory, "*" + schema.SHARD_SUFFIX)))
    }


def test_a_second_extraction_into_the_same_directory_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(6):
        write_audio(str(tmp_path / "in" / f"{i}.wav"), 8.0, seed=i)
    out = tmp_path / "out"
    args = [f"--input={tmp_path / 'in'}", "--num_workers=1", "--shard_size=2"]
    first = subprocess.Popen(
        run_bin("extract", *args, f"--output_dir={out}"),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    lock = out / locks.LOCK_NAME
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.02)
    second = subprocess.run(
        run_bin("extract", *args, f"--output_dir={out}"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"output_dir={out} is in use by another job (pid {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    # The first run's output is complete and equals a lone run's.
    lone = tmp_path / "lone"
    res = subprocess.run(
        run_bin("extract", *args, f"--output_dir={lone}"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert shard_bytes(out) == shard_bytes(lone) and len(shard_bytes(out)) == 3


def test_a_lock_left_by_a_killed_job_is_taken_over(tmp_path):
    (tmp_path / locks.LOCK_NAME).write_text("999999\n")  # its holder is gone: no flock
    said = []
    with locks.DirectoryLock(str(tmp_path), "output_dir", said.append):
        assert (tmp_path / locks.LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(locks.DirectoryInUse, match=f"pid {os.getpid()}"):
            locks.DirectoryLock(str(tmp_path), "output_dir").acquire()
    assert said == [f"took over the lock of an ended job (pid 999999) on {tmp_path}"]


def test_only_our_own_temporary_files_are_removed(audio_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.tmp").write_text("a user's file")
    (out / ("shard-00009.tfrecord" + schema.TMP_SUFFIX)).write_bytes(b"debris of a kill")
    extract.run_extract(
        extract.ExtractConfig(input=str(audio_dir), output_dir=str(out), num_workers=1),
        log=lambda m: None,
    )
    assert (out / "notes.tmp").read_text() == "a user's file"
    assert not glob.glob(str(out / ("*" + schema.TMP_SUFFIX)))


def test_a_glob_through_a_symlink_loop_lists_each_file_once(tmp_path):
    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    write_audio(str(music / "a.wav"), 2.0, seed=1)
    write_audio(str(music / "sub" / "b.wav"), 2.0, seed=2)
    os.symlink("..", music / "sub" / "loop")  # music/sub/loop -> music
    found = extract.find_tracks(
        extract.ExtractConfig(input=f"{music}/**/*.wav", output_dir=str(tmp_path / "o"))
    )
    assert [t.track_id for t in found.tracks] == ["a", "sub/b"]


def test_csv_splits_are_checked_by_name_and_per_track(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_audio(str(tmp_path / f"{name}.wav"), 1.5, seed=1)
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "path,track_id,split,task,label\n"
        "a.wav,song-a,train,genre,rock\n"
        "b.wav,song-a,test,genre,rock\n"  # the same track in another split
        "c.wav,song-c,bogus_split,genre,pop\n"
        "d.wav,song-d,valid,genre,pop\n"
    )
    result = csv_manifest.load(str(manifest))
    problems = [str(p) for p in result.problems]
    assert any(
        p.startswith(
            f"{manifest}:3: track 'song-a' is in split 'test' here but 'train' on line 2"
        )
        for p in problems
    )
    assert any(p.startswith(f"{manifest}:4: unknown split 'bogus_split'") for p in problems)
    assert [t.path for t in result.tracks] == [
        str(tmp_path / "a.wav"),
        str(tmp_path / "d.wav"),
    ]


def test_a_second_input_is_merged_into_splits_csv(audio_dir, tmp_path):
    out = tmp_path / "out"
    more = tmp_path / "more"
    more.mkdir()
    write_audio(str(more / "e.wav"), 2.0, seed=9)
    for source in (audio_dir, more):
        extract.run_extract(
            extract.ExtractConfig(input=str(source), output_dir=str(out), num_workers=1),
            log=lambda m: None,
        )
    rows = (out / extract_manifest.SPLITS_NAME).read_text().splitlines()
    assert len(rows) == 1 + 5  # header, the 4 files of the first input and the new one


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--max_frames=0", "max_frames must be >= 1, got 0"),
        ("--max_frames=-5", "max_frames must be >= 1, got -5"),
        ("--global_batch_size=0", "global_batch_size must be >= 1, got 0"),
        ("--masking=random", "--masking"),
    ],
)
def test_pretrain_usage_errors_are_one_line_and_create_nothing(tmp_path, flag, message):
    args = ["--data=/nowhere", f"--model_dir={tmp_path / 'run'}", flag]
    res = subprocess.run(
        run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_extract_of_a_missing_input_creates_nothing(tmp_path):
    res = subprocess.run(
        run_bin("extract", f"--input={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'out'}"),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2
    assert f"input={tmp_path / 'missing'}: no audio files found" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(
    corpus_shards, tmp_path
):
    def pretrain(steps):
        args = [
            f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={corpus_shards}",
            f"--model_dir={tmp_path}", f"--train_steps={steps}", "--max_frames=32",
            "--checkpoint_every=2", "--eval_every=0", "--eval_batches=1",
        ]  # fmt: skip
        return subprocess.run(
            run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
        )

    assert pretrain(6).returncode == 0
    newest = tmp_path / "checkpoints" / "ckpt-6"
    with open(f"{newest}.index", "r+b") as f:
        f.truncate(10)
    res = pretrain(8)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"checkpoint {newest} cannot be read ({newest}.index" in res.stderr
    assert f"resumed from {tmp_path / 'checkpoints' / 'ckpt-4'}" in res.stderr
    assert "step 4 of 8" in res.stderr
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 8


def test_data_of_another_feature_set_is_refused(corpus_shards, tmp_path):
    other = tmp_path / "authors"
    shutil.copytree(corpus_shards, other)
    manifest = json.loads((other / schema.MANIFEST_NAME).read_text())
    manifest["feature_spec"]["feature_set"] = "authors"
    (other / schema.MANIFEST_NAME).write_text(json.dumps(manifest))

    def pretrain(data):
        args = [
            f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={data}",
            f"--model_dir={tmp_path / 'run'}", "--train_steps=1", "--max_frames=32",
            "--eval_batches=1",
        ]  # fmt: skip
        return subprocess.run(
            run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
        )

    res = pretrain(f"{corpus_shards},{other}")
    assert (
        res.returncode == 2 and "data mixes feature sets ['authors', 'paper']" in res.stderr
    )
    assert pretrain(corpus_shards).returncode == 0
    res = pretrain(str(other))  # resuming onto other features
    assert res.returncode == 2
    assert f"data: {other} holds features of another spec than the run in" in res.stderr
