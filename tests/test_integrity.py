"""Nothing silently wrong: shards and caches by content, one label per track,
outputs confined to their directory."""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, extract_labeled, make_run, write_audio

from m3bert_tf import extract, schema
from m3bert_tf.data import shards
from m3bert_tf.evaluate import feature_sets, probe
from m3bert_tf.runs.example_cache import CacheSource, open_cache
from m3bert_tf.tasks import TaskSpec, read_task_info


def negated_copy(source: str, target: str) -> None:
    """`source` with every feature value's sign flipped: the same size, other contents."""
    with tf.io.TFRecordWriter(target) as writer:
        for record in tf.data.TFRecordDataset(source).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            feature = example.features.feature[schema.FEATURES_KEY].bytes_list
            x = np.frombuffer(feature.value[0], schema.FEATURE_DTYPE)
            feature.value[0] = (-x).astype(schema.FEATURE_DTYPE).tobytes()
            writer.write(example.SerializeToString())


def test_a_shard_swapped_for_one_of_the_same_size_is_named_and_caches_follow_content(
    corpus_shards, tmp_path
):
    data = str(tmp_path / "shards")
    shutil.copytree(corpus_shards, data)
    with open(os.path.join(data, shards.MANIFEST_NAME)) as f:
        manifest = json.load(f)
    entry = manifest["shards"][0]
    assert len(entry["sha256"]) == 64  # the extractor wrote it, and the index too
    with open(shards.index_path(os.path.join(data, entry["name"]))) as f:
        assert json.load(f)["sha256"] == entry["sha256"]
    specs, _ = read_task_info(shards.read_manifests(data))
    label_sizes = {t: specs[t].size for t in specs}
    source = CacheSource(data, label_sizes, "track", None)
    messages = []
    before = open_cache(str(tmp_path / "cache"), source, messages.append)
    key = source.key(shards.list_shards(data))
    described = feature_sets.data_description(shards.list_shards(data), label_sizes)

    shard = os.path.join(data, entry["name"])
    negated_copy(shard, shard + ".new")
    assert os.path.getsize(shard + ".new") == entry["bytes"]
    os.replace(shard + ".new", shard)
    with pytest.raises(
        shards.DataError, match=f"{shard} is not the shard .*other contents"
    ):
        shards.read_manifests(data)

    # Re-extracted for real (a manifest that lists the new contents): every
    # cache keyed by the data is another one, and rebuilt from the new bytes.
    entry["sha256"] = shards.content_digests([shard])[shard]
    with open(os.path.join(data, shards.MANIFEST_NAME), "w") as f:
        json.dump(manifest, f)
    shards.read_manifests(data)
    assert source.key(shards.list_shards(data)) != key
    assert feature_sets.data_description(shards.list_shards(data), label_sizes) != described
    after = open_cache(str(tmp_path / "cache"), source, messages.append)
    assert any("removed the stale cache" in m for m in messages), messages
    first = np.flatnonzero(before.track_ids == after.track_ids[0])[0]
    np.testing.assert_array_equal(after.sequence(0), -before.sequence(first))


def test_a_track_with_contradictory_labels_is_refused_with_file_and_line(tmp_path):
    """12 clips of one track, each with another label: the clips after the
    first are reported with their lines, the job exits non-zero (failures)."""
    rows = ["path,track_id,split,task,label"]
    for i in range(4):
        write_audio(str(tmp_path / f"clip{i}.wav"), 1.0, 22050, seed=i)
        rows.append(f"clip{i}.wav,melody,train,instrument,{['a', 'b', 'c', 'a'][i]}")
    write_audio(str(tmp_path / "other.wav"), 1.0, 22050, seed=9)
    rows.append("other.wav,other,test,instrument,b")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    loaded = extract.find_tracks(
        extract.ExtractConfig(input=str(tmp_path / "labels.csv"), output_dir="-")
    )
    assert sorted(os.path.basename(t.path) for t in loaded.tracks) == [
        "clip0.wav", "clip3.wav", "other.wav",
    ]  # fmt: skip
    reasons = [str(p) for p in loaded.problems]
    assert [r.split(": ")[0] for r in reasons] == [
        f"{tmp_path / 'labels.csv'}:3", f"{tmp_path / 'labels.csv'}:4",
    ]  # fmt: skip
    assert "track 'melody' has instrument label 'b' here but 'a' on line 2" in reasons[0]


def test_loaders_drop_every_file_of_a_track_whose_files_disagree():
    from m3bert_tf.datasets import LoadResult, Track, refuse_conflicting_labels

    tracks = [
        Track("x1.wav", "x", "train", {"genre": "rock"}),
        Track("x2.wav", "x", "train", {"genre": "jazz"}),
        Track("y.wav", "y", "train", {"genre": "rock"}),
    ]
    result = refuse_conflicting_labels(LoadResult(tracks, {}))
    assert [t.path for t in result.tracks] == ["y.wav"]
    assert [p.path for p in result.problems] == ["x1.wav", "x2.wav"]
    assert "['jazz', 'rock'] across its files" in result.problems[0].reason


def test_per_track_scoring_never_merges_examples_whose_labels_differ():
    spec = TaskSpec("instrument", "classification", classes=("a", "b"))
    y = np.array([[0.0], [0.0], [1.0]])
    np.testing.assert_array_equal(
        probe.group_labels(spec, y, np.array(["t1", "t1", "t2"])), [[0.0], [1.0]]
    )
    with pytest.raises(ValueError, match="track 't1' has examples with different labels"):
        probe.group_labels(spec, y, np.array(["t1", "t1", "t1"]))


def test_bin_embed_confines_ids_refuses_shared_ids_keeps_other_inputs_and_redoes_bad_files(
    tmp_path, capsys
):
    from m3bert_tf import runs
    from m3bert_tf.serving.embed_job import EmbedConfig, run_embed

    run = make_run(tmp_path / "run", "pretrained")
    music = tmp_path / "music"
    music.mkdir()
    for i, name in enumerate("abcd"):
        write_audio(str(music / f"{name}.wav"), 2.0, 22050, seed=i)
    (music / "ids.csv").write_text(
        "path,track_id\na.wav,../../x\nb.wav,dup\nc.wav,dup\nd.wav,good\n"
    )
    out = tmp_path / "deep" / "emb"
    config = EmbedConfig(model=run, input=str(music / "ids.csv"), output_dir=str(out))
    result = run_embed(config)
    assert result["embedded"] == 1
    reasons = {os.path.basename(p["path"]): p["reason"] for p in result["failed"]}
    assert "cannot name a file inside the output directory" in reasons["a.wav"]
    assert "also the id of" in reasons["b.wav"] and "also the id of" in reasons["c.wav"]
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == ["good.npz"]

    # A second input into the same directory keeps the first one's rows.
    other = tmp_path / "other"
    other.mkdir()
    write_audio(str(other / "e.wav"), 2.0, 22050, seed=7)
    run_embed(dataclasses.replace(config, input=str(other)))
    index = (out / "index.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in index[1:]] == ["e", "good"]

    # A truncated output is reported and made again, not counted as done.
    good = out / "good.npz"
    whole = good.read_bytes()
    good.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    assert run_embed(config)["embedded"] == 1
    assert "good.npz is unreadable" in capsys.readouterr().out
    assert good.read_bytes() == whole

    # The model is known by its weights: a copy elsewhere is the same model,
    # the same path trained further is another one.
    copy = shutil.copytree(run, tmp_path / "copy")
    assert run_embed(dataclasses.replace(config, model=str(copy)))["embedded"] == 0
    encoder = runs.load_encoder(run)
    encoder.set_weights([w + 0.01 for w in encoder.get_weights()])
    encoder.save(os.path.join(run, "encoder.keras"))
    with pytest.raises(runs.ConfigMismatch, match="model_digest"):
        run_embed(config)


def test_bin_data_service_starts_only_when_told_it_listens_on_every_interface():
    import subprocess

    from conftest import run_bin, user_env

    proc = subprocess.run(
        run_bin("data_service", "--mode=dispatcher", "--port=0"),
        env=user_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--bind_address=127.0.0.1: a tf.data service server always listens on every" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_one_task_that_cannot_be_probed_does_not_sink_the_others(tmp_path):
    """arousal has one validation example (its R² undefined): it is listed as not
    probed with the reason; genre is probed and the tables are written."""
    from m3bert_tf.evaluate import job

    splits = ["train"] * 6 + ["valid"] * 3 + ["test"] * 3
    rows = [(f"g{i}", split, "genre", "ab"[i % 2]) for i, split in enumerate(splits)]
    splits = ["train"] * 4 + ["valid"] + ["test"] * 2  # one validation example
    rows += [
        (f"a{i}", split, "arousal", f"{0.1 * i:.1f}") for i, split in enumerate(splits)
    ]
    data = extract_labeled(tmp_path, rows)
    messages = []
    config = job.EvaluateConfig(
        data=data, output_dir=str(tmp_path / "eval"),
        baselines=("mfcc",), probes=("linear",), seeds=1, epochs=5,
    )  # fmt: skip
    result = job.run_evaluate(config, log=messages.append)
    assert list(result["tasks"]) == ["genre"]
    assert "R² is undefined: its valid targets are constant" in result["skipped"]["arousal"]
    assert any(m.startswith("task arousal: not probed") for m in messages)
    assert "## arousal: not probed" in (tmp_path / "eval" / "results.md").read_text()


def test_usage_errors_leave_no_directory_and_no_traceback(corpus_shards, tmp_path):
    import subprocess

    from conftest import run_bin, user_env

    for argv, field in (
        (("finetune", f"--data={corpus_shards}", f"--pretrained={tmp_path / 'missing'}",
          f"--model_dir={tmp_path / 'out'}"), "pretrained="),
        (("evaluate", f"--data={corpus_shards}", f"--models={tmp_path / 'missing'}",
          f"--output_dir={tmp_path / 'out'}"), "--models: "),
    ):  # fmt: skip
        proc = subprocess.run(
            run_bin(*argv), env=user_env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and field in proc.stderr
        assert str(tmp_path / "missing") in proc.stderr
        assert not (tmp_path / "out").exists(), argv[0]


def test_a_lock_removes_the_directory_it_made_when_the_job_wrote_nothing(tmp_path):
    from m3bert_tf.io.locks import DirectoryLock

    with DirectoryLock(str(tmp_path / "new" / "run"), "model_dir"):
        (tmp_path / "new" / "run" / "logs").mkdir()
    assert not (tmp_path / "new").exists()
    with DirectoryLock(str(tmp_path / "kept"), "model_dir"):
        (tmp_path / "kept" / "config.json").write_text("{}")
    assert (tmp_path / "kept" / "config.json").exists()
    (tmp_path / "mine").mkdir()
    with DirectoryLock(str(tmp_path / "mine"), "model_dir"):
        pass
    assert (tmp_path / "mine").is_dir()  # it was there before: the user's


def test_concurrent_exports_into_one_base_both_land_and_say_which_weights(tmp_path):
    """Two bin/export at once: the second waits for the first and takes the
    next version; a run whose directory is locked by a job is exported with a
    warning; export.json names the step and the weights' digest."""
    import subprocess

    from conftest import run_bin, user_env

    from m3bert_tf import runs
    from m3bert_tf.io import locks

    run = make_run(tmp_path / "run", "pretrained")
    (tmp_path / "run" / runs.RESULTS_NAME).write_text(json.dumps({"step": 1234}))
    base = tmp_path / "exports"
    argv = run_bin("export", f"--model_dir={run}", f"--export_dir={base}")
    with locks.DirectoryLock(run, "model_dir"):  # as a training job holds it
        procs = [
            subprocess.Popen(
                argv,
                env=user_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        outputs = ["".join(p.communicate(timeout=600)) for p in procs]
    for proc, said in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, said[-3000:]
        assert f"{run} is in use by a running job (pid {os.getpid()})" in said
    # The second usually waits (both load the model first); both land either way.
    assert sum("waiting for another job" in said for said in outputs) <= 1
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == [
        "1",
        "2",
    ]
    for version in ("1", "2"):
        info = json.loads((base / version / "export.json").read_text())
        assert info["step"] == 1234 and info["model_digest"] == runs.model_digest(run)


@pytest.mark.parametrize("digest", [True, False])
def test_pretraining_names_a_shard_of_random_bytes(corpus_shards, tmp_path, digest):
    """Random bytes of a shard's name and size: named from the manifest's
    digest, or (a manifest of an older release, no digest) when reading fails."""
    import subprocess

    from conftest import run_bin, user_env

    data = tmp_path / "shards"
    shutil.copytree(corpus_shards, data)
    manifest = json.loads((data / shards.MANIFEST_NAME).read_text())
    entry = manifest["shards"][1]
    shard = data / entry["name"]
    shard.write_bytes(np.random.default_rng(0).bytes(entry["bytes"]))
    if not digest:
        for e in manifest["shards"]:
            del e["sha256"]
        (data / shards.MANIFEST_NAME).write_text(json.dumps(manifest))
    proc = subprocess.run(
        run_bin("pretrain", f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}",
                f"--data={data}", f"--model_dir={tmp_path / 'run'}", "--train_steps=20",
                "--max_frames=32", "--eval_every=0", "--eval_batches=1"),
        env=user_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = "is not the shard manifest.json lists" if digest else "is corrupted"
    assert f"{shard} {said}" in proc.stderr and "Traceback" not in proc.stderr


def test_jobs_writing_to_a_url_stream_through_a_directory_of_their_own(
    tmp_path, monkeypatch
):
    """bin/extract and bin/embed into a URL (TensorFlow's ram:// file system
    here) keep their local temporary files in a new directory under the
    system's, and remove it: a shared name there was cleared by every job,
    under the feet of another one writing elsewhere."""
    from m3bert_tf.serving.embed_job import EmbedConfig, run_embed

    system_tmp = tmp_path / "system_tmp"
    (system_tmp / ".tmp").mkdir(parents=True)
    (system_tmp / ".tmp" / "another-job.raw").write_bytes(b"in flight")
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    music = tmp_path / "music"
    music.mkdir()
    for i, name in enumerate("ab"):
        write_audio(str(music / f"{name}.wav"), 2.0, 22050, seed=i)

    def ours():
        return sorted(
            p.name for p in system_tmp.iterdir() if not p.name.startswith("__autograph")
        )

    manifest = extract.run_extract(extract.ExtractConfig(
        input=str(music), output_dir="ram://integrity/shards", num_workers=2,
        progress_interval=0.0,
    ))  # fmt: skip
    assert manifest["counts"]["tracks"] == 2 and ours() == [".tmp"]
    run = make_run(tmp_path / "run", "pretrained")
    # One model process: ram:// lives in one process's memory, and model
    # workers would write their files into their own.
    result = run_embed(EmbedConfig(
        model=run, input=str(music), output_dir="ram://integrity/emb", model_in="main"
    ))  # fmt: skip
    assert result["embedded"] == 2 and not result["failed"]
    assert ours() == [".tmp"]
    assert (system_tmp / ".tmp" / "another-job.raw").read_bytes() == b"in flight"
    assert sorted(tf.io.gfile.listdir("ram://integrity/emb")) == [
        "a.npz",
        "b.npz",
        "embed.json",
        "index.csv",
    ]


@pytest.mark.parametrize("damage", ["sequences cut short", "index overwritten"])
def test_a_damaged_fine_tuning_cache_is_made_again(corpus_shards, tmp_path, damage):
    """Was: every rerun crashed with "mmap length is greater than file size"."""
    specs, _ = read_task_info(shards.read_manifests(corpus_shards))
    source = CacheSource(corpus_shards, {t: specs[t].size for t in specs}, "track", None)
    messages = []
    first = open_cache(str(tmp_path / "cache"), source, messages.append)
    expected = np.array(first.sequence(len(first) - 1))
    if damage == "sequences cut short":
        with open(os.path.join(first.path, "sequences.f32"), "r+b") as f:
            f.truncate(1000)
    else:
        with open(os.path.join(first.path, "index.npz"), "wb") as f:
            f.write(b"overwritten")
    again = open_cache(str(tmp_path / "cache"), source, messages.append)
    assert any(m.startswith(f"the cache {first.path} is unreadable") for m in messages)
    np.testing.assert_array_equal(again.sequence(len(again) - 1), expected)
