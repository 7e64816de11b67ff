"""Faults and misuse that used to lose data or time silently (issue "Nothing
lost, nothing silent"), each reproduced with the real thing: two real
processes, a file truncated on disk, a symlink loop on disk."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    ROOT,
    press_ctrl_c,
    run_bin,
    user_env,
    write_audio,
    write_constant_shard,
)

from m3bert_tf import extract
from m3bert_tf.data import shards
from m3bert_tf.datasets import csv_manifest
from m3bert_tf.io import locks
from m3bert_tf.train import checkpoints

ENV = user_env()


def shard_bytes(directory):
    return {
        os.path.basename(p): open(p, "rb").read()
        for p in sorted(glob.glob(os.path.join(directory, "*" + shards.SHARD_SUFFIX)))
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
    # Paused while it holds the lock, so the second run surely meets it.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(
            run_bin("extract", *args, f"--output_dir={out}"),
            env=ENV, capture_output=True, text=True,
        )  # fmt: skip
    finally:
        os.kill(first.pid, signal.SIGCONT)
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


def test_a_killed_jobs_forked_children_do_not_hold_its_lock(tmp_path):
    """The extraction job forks its workers while it holds the output
    directory's lock: they close their copy at once, so a job killed while
    they live (SIGKILL: no cleanup) leaves the directory free. The child
    prints its own pid: it has run its fork hooks by then (a pid printed by
    the parent right after the fork raced them on a loaded CI machine)."""
    code = (
        "import multiprocessing, os, sys, time\n"
        "from m3bert_tf.io import locks\n"
        "def nap():\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        f"locks.DirectoryLock({str(tmp_path)!r}, 'output_dir').acquire()\n"
        "multiprocessing.get_context('fork').Process(target=nap).start()\n"
        "time.sleep(60)\n"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", code], env={**ENV, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    child = int(job.stdout.readline())
    try:
        assert locks.holder(str(tmp_path)) == str(job.pid)
        job.kill()
        job.wait()
        os.kill(child, 0)  # the forked child still lives...
        assert locks.holder(str(tmp_path)) is None  # ...and holds nothing
        with locks.DirectoryLock(str(tmp_path), "output_dir"):
            pass
    finally:
        job.kill()
        os.kill(child, signal.SIGKILL)


def test_only_our_own_temporary_files_are_removed(audio_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.tmp").write_text("a user's file")
    (out / ("shard-00009.tfrecord" + shards.TMP_SUFFIX)).write_bytes(b"debris of a kill")
    extract.run_extract(
        extract.ExtractConfig(input=str(audio_dir), output_dir=str(out), num_workers=1),
        log=lambda m: None,
    )
    assert (out / "notes.tmp").read_text() == "a user's file"
    assert not glob.glob(str(out / ("*" + shards.TMP_SUFFIX)))


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
    rows = (out / shards.SPLITS_NAME).read_text().splitlines()
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
    manifest = json.loads((other / shards.MANIFEST_NAME).read_text())
    manifest["feature_spec"]["feature_set"] = "authors"
    (other / shards.MANIFEST_NAME).write_text(json.dumps(manifest))

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


def tiny_pretrain_args(shards, model_dir, steps, *extra):
    return [
        f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={shards}",
        f"--model_dir={model_dir}", f"--train_steps={steps}", "--max_frames=32",
        "--checkpoint_every=10", "--eval_every=0", "--eval_batches=1", "--log_every=1",
        *extra,
    ]  # fmt: skip


def final_weights(model_dir):
    from m3bert_tf import runs

    return runs.load_encoder(str(model_dir)).get_weights()


@pytest.mark.slow
def test_killed_pretraining_with_dropout_resumes_exactly(corpus_shards, tmp_path):
    """Dropout's random state is checkpointed: a kill -9 and a resume give the
    losses and weights of an uninterrupted run."""
    from conftest import kill_after_checkpoints

    steps, dropout = 200, "--dropout=0.1"
    whole = subprocess.run(
        run_bin("pretrain", *tiny_pretrain_args(corpus_shards, tmp_path / "whole", steps, dropout)),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]
    argv = run_bin(
        "pretrain", *tiny_pretrain_args(corpus_shards, tmp_path / "cut", steps, dropout)
    )
    killed_at = kill_after_checkpoints(argv, tmp_path / "cut" / "checkpoints", 2, ENV)
    assert killed_at < steps
    resumed = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {killed_at} of {steps}" in resumed.stderr

    def losses(stderr):
        return {
            line.split("/")[0].split()[-1]: line.split("loss ")[1].split(",")[0]
            for line in stderr.splitlines()
            if line.startswith("pretrain: ") and " steps (" in line
        }

    after = {k: v for k, v in losses(whole.stderr).items() if int(k) > killed_at}
    assert after and after == {
        k: v for k, v in losses(resumed.stderr).items() if k in after
    }
    for a, b in zip(
        final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "value, messages",
    [
        # NaN features: the loss is NaN at the first step on them.
        (np.nan, ["loss is nan at step 31"]),
        # float16's largest: a finite but exploding loss.
        (6e4, ["at step 31 is", "the run diverged; stopped"]),
    ],
)
def test_a_bad_loss_stops_before_it_is_checkpointed(
    corpus_shards, tmp_path, value, messages
):
    """A NaN or exploding loss stops the run, and the checkpoint it names as the
    last good one (and the newest on disk) predates it."""
    good = subprocess.run(
        run_bin("pretrain", *tiny_pretrain_args(corpus_shards, tmp_path / "run", 30)),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr[-3000:]
    bad = tmp_path / "bad"
    write_constant_shard(bad, value, corpus_shards)
    res = subprocess.run(
        run_bin("pretrain", *tiny_pretrain_args(str(bad), tmp_path / "run", 60)),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0
    for message in messages:
        assert message in res.stderr
    assert (
        f"The last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'ckpt-30'}"
        in res.stderr
    )
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith(
        "ckpt-30"
    )


def test_shards_that_disagree_with_the_manifest_are_named(corpus_shards, tmp_path):
    from m3bert_tf.data import shards

    def copy(name):
        shutil.copytree(corpus_shards, tmp_path / name)
        return tmp_path / name

    missing = copy("missing")
    os.remove(missing / "shard-00001.tfrecord")
    with pytest.raises(
        shards.DataError, match=r"missing/shard-00001.tfrecord is listed .* missing"
    ):
        shards.read_manifests(str(missing))
    truncated = copy("truncated")
    with open(truncated / "shard-00002.tfrecord", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(
        shards.DataError, match=r"shard-00002.tfrecord has 1000 bytes.*truncated"
    ):
        shards.read_manifests(str(truncated))
    foreign = copy("foreign")
    shutil.copy(foreign / "shard-00000.tfrecord", foreign / "shard-00099.tfrecord")
    with pytest.raises(
        shards.DataError, match=r"shard-00099.tfrecord is not in .*manifest.json"
    ):
        shards.read_manifests(str(foreign))
    # Through the binary: one line, exit 2, nothing trained.
    args = tiny_pretrain_args(str(truncated), tmp_path / "run", 1)
    res = subprocess.run(
        run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
    )
    assert (
        res.returncode == 2
        and "has 1000 bytes" in res.stderr
        and "Traceback" not in res.stderr
    )


def test_the_divergence_guard_judges_from_the_first_step(corpus_shards, tmp_path):
    """--learning_rate=1e6 explodes within a few steps, long before the
    running level's warm-up: the run stops there, and no checkpoint holds it."""
    res = subprocess.run(
        run_bin("pretrain", *tiny_pretrain_args(corpus_shards, tmp_path / "run", 19),
                "--learning_rate=1e6", "--checkpoint_every=1"),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0 and "the run diverged; stopped" in res.stderr, res.stderr[
        -3000:
    ]
    stopped = int(res.stderr.split(" at step ")[1].split()[0])
    assert stopped < 19
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest is None or int(latest.rsplit("-", 1)[1]) < stopped
    # The loss at step s measures the weights saved at s - 1: the named
    # checkpoint is one whose weights are sane, not merely the newest.
    named = res.stderr.split("The last good checkpoint is ")[1].split(". ")[0]
    if named != "none":
        assert checkpoints._largest_weight(named) < 1e3
    if latest is not None and named != latest:
        assert checkpoints._largest_weight(latest) > 100 * checkpoints._largest_weight(
            named
        )
        assert f"move {latest}" in res.stderr
    assert "a resumed run keeps its own" in res.stderr or named == "none"


def test_the_guard_names_the_checkpoint_whose_weights_are_sane(tmp_path):
    """Checkpoints at steps 1, 2, 3 with max |w| 1.0, 1.5 and 9e5: a bad loss
    at step 4 (measuring step 3's weights) names ckpt-2; at step 9 (step 3's
    weights passed the guard at step 4) ckpt-3; NaN weights are never named."""
    value = tf.Variable([0.5, -1.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=value), str(tmp_path), 5)
    for step, largest in ((1, 1.0), (2, 1.5), (3, 9e5)):
        value.assign([0.1, -largest])
        manager.save(checkpoint_number=step)
    kept = list(manager.checkpoints)
    assert checkpoints.last_good_checkpoint(kept, 4).endswith("ckpt-2")
    assert checkpoints.last_good_checkpoint(kept, 9).endswith("ckpt-3")
    value.assign([np.nan, 0.0])
    manager.save(checkpoint_number=4)
    assert checkpoints.last_good_checkpoint(list(manager.checkpoints), 5).endswith("ckpt-3")
    assert checkpoints.last_good_checkpoint([], 5) is None


def test_ctrl_c_stops_an_extraction_and_its_workers_with_one_line(tmp_path):
    """Ctrl-C reaches the job and its forked workers: the workers ignore it,
    the job stops them and says so once (status 130); the rerun finishes."""
    music = tmp_path / "music"
    music.mkdir()
    write_audio(str(tmp_path / "clip.wav"), 10.0, 44100, seed=1)
    for i in range(150):  # the job must still be running when Ctrl-C comes
        os.symlink(tmp_path / "clip.wav", music / f"c{i:03d}.wav")
    argv = run_bin("extract", f"--input={music}", f"--output_dir={tmp_path / 'out'}",
                   "--num_workers=2")  # fmt: skip
    status, stderr, children = press_ctrl_c(argv, "extract: 1/", ENV)
    assert status == 130 and stderr == "extract: interrupted\n", stderr
    assert len(children) >= 2  # the forked workers, gone
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["tracks"] == 150
