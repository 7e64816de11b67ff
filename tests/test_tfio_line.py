"""The tensorflow-io line (`pip install -e '.[tfio]'`, `make test-tfio`): jobs
on s3:// URLs against a real S3 server on 127.0.0.1 (moto's), with
tensorflow-io's own S3 client. Skipped on the default line, which has no
tensorflow-io (tests/test_storage.py checks the one-line refusal there)."""

import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import ROOT, run_bin, user_env

pytestmark = pytest.mark.skipif(
    not tf.__version__.startswith("2.17."),
    reason="the tensorflow-io line's test: make test-tfio",
)
BUCKET = "m3bert"


@pytest.fixture
def s3(tmp_path):
    """(environment for tensorflow-io's S3 client, boto3 client) of a moto
    S3 server on a free loopback port, stopped afterwards."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"),
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    env = {**user_env(), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "S3_ENDPOINT": endpoint, "S3_USE_HTTPS": "0",
           "S3_VERIFY_SSL": "0"}  # fmt: skip
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    try:
        for _ in range(100):
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"no S3 server at {endpoint}")
        yield env, client
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_extraction_and_pretraining_on_s3_urls_end_with_their_own_status(tmp_path, s3):
    """Shards written to and read from s3://, and each job exits 0: without
    `cli._exit_past_tfio`, tensorflow-io 0.37.1's S3 client aborts the
    process at exit (134, "pure virtual method called") after a job that
    succeeded."""
    from m3bert_tf.demo import corpus

    env, client = s3
    corpus.write_example_corpus(str(tmp_path / "corpus"), num_tracks=6, max_duration=10.0)
    url = f"s3://{BUCKET}/shards"
    res = subprocess.run(
        run_bin("extract", f"--input={tmp_path}/corpus/manifest.csv", f"--output_dir={url}",
                "--num_workers=1", "--shard_size=2"),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pure virtual" not in res.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "shards/manifest.json" in keys
    assert sum(k.endswith(".tfrecord") for k in keys) >= 3
    res = subprocess.run(
        run_bin("pretrain", f"--flagfile={ROOT}/configs/tiny.flags", f"--data={url}",
                f"--model_dir={tmp_path / 'run'}", "--train_steps=2", "--max_frames=64",
                "--checkpoint_every=2", "--eval_every=0", "--eval_batches=1",
                "--log_every=1"),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.path.exists(tmp_path / "run" / "encoder.keras")
