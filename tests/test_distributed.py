"""Multi-worker pretraining on real worker processes (127.0.0.1, TF_CONFIG)."""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_bin, small_pipeline, user_env

pytestmark = pytest.mark.slow

TINY = os.path.join(ROOT, "configs", "tiny.flags")


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(flags, log_dir, tag):
    """Two bin/pretrain workers of one cluster; each with its own TMPDIR."""
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        tmp = os.path.join(log_dir, f"tmp-{tag}-{i}")
        os.makedirs(tmp, exist_ok=True)
        tf_config = {
            "cluster": {"worker": addresses},
            "task": {"type": "worker", "index": i},
        }
        env = {**user_env(), "TF_CONFIG": json.dumps(tf_config), "TMPDIR": tmp}
        log = open(os.path.join(log_dir, f"{tag}-{i}.log"), "w")
        procs.append(
            subprocess.Popen(run_bin("pretrain", *flags), env=env, stdout=log, stderr=log)
        )
    return procs


def logs(log_dir, tag):
    return [open(os.path.join(log_dir, f"{tag}-{i}.log")).read() for i in range(2)]


def run_flags(shards, model_dir, steps, **extra):
    flags = {
        "flagfile": TINY, "data": shards, "model_dir": model_dir, "train_steps": steps,
        "max_frames": 64, "log_every": 1, "checkpoint_every": 3, "eval_every": 0,
        "eval_batches": 1, "holdout_percent": 0, **extra,
    }  # fmt: skip
    return [f"--{k}={v}" for k, v in flags.items()]


def test_two_workers_train_like_two_replicas_of_one_process(corpus_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    flags = run_flags(corpus_shards, model_dir, 6)
    procs = start_workers(flags, str(tmp_path), "run")
    twin = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "multi_worker_twin.py"), *flags],
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    codes = [p.wait(timeout=300) for p in procs]
    chief, other = logs(str(tmp_path), "run")
    assert codes == [0, 0], chief[-2000:] + other[-2000:]
    assert twin.returncode == 0, twin.stderr[-3000:]

    # Each worker read its own shards, together all of them.
    read = [
        set(re.search(r"shard files: (.*)", text).group(1).split(", "))
        for text in (chief, other)
    ]
    every = {os.path.basename(p) for p in glob.glob(f"{corpus_shards}/*.tfrecord")}
    assert read[0] and read[1] and not read[0] & read[1] and read[0] | read[1] == every

    # The same steps as one process with two replicas fed the same batches.
    results = json.load(open(os.path.join(model_dir, "results.json")))
    losses = json.loads(twin.stdout.strip().splitlines()[-1])["losses"]
    assert results["step"] == 6 and results["num_replicas"] == 2
    assert results["train"]["loss"] == pytest.approx(losses[-1], rel=1e-4)
    assert losses[-1] < losses[0]

    # Only the chief wrote: one set of checkpoints, the other's scratch removed.
    assert sorted(os.listdir(model_dir)) == sorted(
        [".m3bert.lock", "checkpoints", "config.json", "encoder.keras", "eval", "flags.txt",
         "input_spec.json", "results.json", "train"]
    )  # fmt: skip
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == sorted(
        ["checkpoint"] + [f"ckpt-{s}.{x}" for s in (3, 6)
                          for x in ("index", "data-00000-of-00001")]
    )  # fmt: skip
    assert os.listdir(tmp_path / "tmp-run-1") == []


def test_a_killed_worker_resumes_with_the_cluster_from_the_checkpoint(
    corpus_shards, tmp_path
):
    model_dir = str(tmp_path / "run")
    flags = run_flags(corpus_shards, model_dir, 100, checkpoint_every=10, log_every=10)
    chief, other = start_workers(flags, str(tmp_path), "first")
    deadline = time.monotonic() + 240
    while not glob.glob(f"{model_dir}/checkpoints/ckpt-*.index"):
        assert time.monotonic() < deadline and chief.poll() is None
        time.sleep(0.05)
    other.kill()
    assert chief.wait(timeout=120) == 1  # its collective fails: it stops, saying why
    assert "a worker of the cluster stopped" in logs(str(tmp_path), "first")[0]
    saved = max(
        int(p.split("ckpt-")[1].split(".")[0])
        for p in glob.glob(f"{model_dir}/checkpoints/ckpt-*.index")
    )
    assert saved < 100

    procs = start_workers(flags, str(tmp_path), "again")
    codes = [p.wait(timeout=300) for p in procs]
    texts = logs(str(tmp_path), "again")
    assert codes == [0, 0], texts[0][-2000:] + texts[1][-2000:]
    for text in texts:
        assert f"resumed from {model_dir}/checkpoints/ckpt-{saved}" in text
        assert f"step {saved} of 100" in text
    assert json.load(open(os.path.join(model_dir, "results.json")))["step"] == 100


def _examples(dataset):
    """Each example of a batch-size-1 dataset as bytes (masked input, target, masks)."""
    out = []
    for inputs, targets, masks in dataset:
        parts = [inputs["features"], targets, *(masks[k] for k in sorted(masks))]
        out.append(b"".join(p.numpy().tobytes() for p in parts))
    return out


def test_the_tf_data_service_serves_the_pipeline_and_training(corpus_shards, tmp_path):
    import numpy as np

    from m3bert_tf.data import pipeline, service, shards
    from m3bert_tf.train import pretrain

    config = small_pipeline(corpus_shards)
    one = service.start_dispatcher()
    workers = [service.start_worker(one.target)]
    local = list(pipeline.make_pretrain_dataset(config).take(12))
    served = pipeline.make_pretrain_dataset(
        config, service=pipeline.DataService(one.target, "one-worker")
    )
    for want, got in zip(local, served.take(12), strict=True):
        for a, b in zip(tf_flatten(want), tf_flatten(got), strict=True):
            np.testing.assert_array_equal(a, b)

    # Two workers take whole units (a pass of 3 shards is one): three passes
    # through them hold the same examples as three local passes.
    two = service.start_dispatcher()
    workers += [service.start_worker(two.target) for _ in range(2)]
    files = shards.list_shards(corpus_shards)
    single = small_pipeline(corpus_shards, 1)
    local_pass = _examples(pipeline.make_pretrain_dataset(single, passes=3))
    served_pass = _examples(
        pipeline.make_pretrain_dataset(
            single, service=pipeline.DataService(two.target, "two-workers"), passes=3
        )
    )
    assert len(local_pass) == 3 * sum(pipeline.training_counts(files, 20)) and sorted(
        served_pass
    ) == sorted(local_pass)

    # And a run trains through the one-worker service.
    results = pretrain.run_pretrain(
        pretrain.PretrainConfig(
            data=corpus_shards,
            model_dir=str(tmp_path / "run"),
            data_service=one.target,
            model=pretrain.ModelConfig(  # the tiny config's sizes
                num_layers=2, hidden_dim=64, num_heads=2, ffn_dim=128, dropout=0.0
            ),
            max_frames=32,
            global_batch_size=4,
            train_steps=3,
            eval_every=0,
            eval_batches=1,
            holdout_percent=20,
            log_every=1,
        ),  # fmt: skip
        log=lambda msg: None,
    )
    assert results["step"] == 3 and np.isfinite(results["train"]["loss"])


def tf_flatten(element):
    import tensorflow as tf

    return [x.numpy() for x in tf.nest.flatten(element)]


def test_extraction_and_training_take_file_urls(tmp_path):
    """Every path as a file:// URL: what gs:// or s3:// take through the same
    code (`storage`, tf.io.gfile)."""
    from m3bert_tf.demo import corpus

    corpus.write_example_corpus(str(tmp_path / "corpus"), num_tracks=8, max_duration=12.0)
    url = f"file://{tmp_path}"
    res = subprocess.run(
        run_bin("extract", f"--input={url}/corpus/manifest.csv", f"--output_dir={url}/shards",
                "--num_workers=1", "--shard_size=2"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(glob.glob(f"{tmp_path}/shards/shard-*.tfrecord")) >= 2
    res = subprocess.run(
        run_bin("pretrain", f"--flagfile={TINY}", f"--data={url}/shards",
                f"--model_dir={url}/run", "--train_steps=4", "--max_frames=64",
                "--checkpoint_every=2", "--eval_every=0", "--eval_batches=1", "--log_every=2"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("config.json", "input_spec.json", "results.json", "encoder.keras"):
        assert os.path.exists(tmp_path / "run" / name), name
    assert json.load(open(tmp_path / "run" / "results.json"))["step"] == 4


def test_tf_config_decides_the_strategy_and_bad_settings_are_named(monkeypatch):
    from m3bert_tf.train import distribute, pretrain

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster_config() is None
    one = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(one))
    assert distribute.cluster_config() is None  # one task is no cluster
    with pytest.raises(ValueError, match="TF_CONFIG does not name a cluster"):
        distribute.make_strategy("multi_worker")
    two = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker"}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(two))
    assert distribute.cluster_config()["cluster"]["worker"] == ["b:1"]
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a cluster spec"):
        distribute.cluster_config()
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("parameter_server")
    with pytest.raises(ValueError, match="strategy must be one of"):
        pretrain.PretrainConfig(data="d", model_dir="m", strategy="ps")
    with pytest.raises(ValueError, match="data_service must be grpc://host:port"):
        pretrain.PretrainConfig(data="d", model_dir="m", data_service="host:5050")


def test_fewer_shards_than_workers_split_the_stream_by_example(corpus_shards):
    """Four input pipelines over three shard files: each reads every file and
    keeps every fourth example, so together they hold the one-pipeline
    stream's examples once each, crops and masks included."""
    import numpy as np
    import tensorflow as tf

    from m3bert_tf.data import pipeline

    config = small_pipeline(corpus_shards, 1)
    assert pipeline.shards_by_record(3, 4) and not pipeline.shards_by_record(4, 4)
    whole = _examples(pipeline.make_pretrain_dataset(config).take(16))
    parts = [
        _examples(
            pipeline.make_pretrain_dataset(
                config, True, tf.distribute.InputContext(4, i, 4)
            ).take(4)
        )
        for i in range(4)
    ]
    assert [parts[i % 4][i // 4] for i in range(16)] == whole
    assert len(set(whole)) == 16 and np.all([len(p) == 4 for p in parts])
