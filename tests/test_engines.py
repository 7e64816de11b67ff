"""bin/extract on real distributed engines, each started here on 127.0.0.1 in
processes of its own (`extract/local_engines.py`): Beam's portable runner (a
job service and an external SDK worker pool starting 2 SDK workers a job,
the code path of Flink, Spark and Dataflow for Python) and Beam's DaskRunner on a Dask scheduler with 2
worker processes. Each must write the local pool's shards, indexes and
manifest byte for byte to a file:// URL, list failures as it does, and
survive a killed worker or end naming the files it left.

Marked `engines`: `make test-engines` runs them (CI does), `make test` not.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import time

import pytest
from conftest import run_bin, user_env

from m3bert_tf.extract import local_engines

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(
        importlib.util.find_spec("distributed") is None
        or importlib.util.find_spec("apache_beam") is None,
        reason="pip install -e '.[dask]'",
    ),
]


def _engine_env() -> dict:
    """A user's environment, this Python first on PATH (the worker pool
    starts SDK workers as `python`)."""
    return {**user_env(), "PATH": local_engines.engine_env()["PATH"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 tracks of 40-100 s (some with several chunks), one broken file,
    and the local pool's output of them (2 workers, 3 examples a shard)."""
    from m3bert_tf.demo import corpus as corpus_lib

    root = tmp_path_factory.mktemp("engines")
    corpus_lib.write_example_corpus(
        str(root / "corpus"), num_tracks=16, min_duration=40.0, max_duration=100.0
    )
    (root / "corpus" / "audio" / "broken.wav").write_bytes(b"RIFF not audio")
    local = _extract(root, "local", "--runner=local", "--num_workers=2")
    assert local.returncode == 1, local.stderr[-3000:]  # the broken file
    return root


def _argv(root, name, *flags):
    return run_bin("extract", f"--input={root / 'corpus' / 'audio'}",
                   f"--output_dir=file://{root / name}", "--shard_size=3", *flags)  # fmt: skip


def _extract(root, name, *flags):
    return subprocess.run(
        _argv(root, name, *flags), env=_engine_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _start_extract(root, name, *flags):
    return subprocess.Popen(
        _argv(root, name, *flags), env=_engine_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _assert_same_as_local(root, name):
    """Every file byte for byte (shards, indexes, failures, spec), the
    manifest but its creation time."""
    local, other = root / "local", root / name
    assert sorted(os.listdir(other)) == sorted(os.listdir(local))
    for entry in os.listdir(local):
        if entry == "manifest.json":
            a, b = (json.loads((d / entry).read_text()) for d in (local, other))
            a.pop("created"), b.pop("created")
            assert a == b
        else:
            assert (other / entry).read_bytes() == (local / entry).read_bytes(), entry
    assert len([e for e in os.listdir(local) if e.endswith(".tfrecord")]) >= 5


def _wait_until_staged(job, staging) -> None:
    """Until featurizing is under way: a staged track (or failure) exists."""
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(f.suffix == ".json" for f in staging.iterdir())):
        assert time.monotonic() < deadline and job.poll() is None, "the job ended first"
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    """The process ids of `pid`'s children, started by any of its threads (Linux)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _last_line(job) -> str:
    _, err = job.communicate(timeout=300)
    assert job.returncode == 1 and "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def test_the_portable_runner_with_an_external_worker_pool_writes_the_local_shards(
    corpus, tmp_path
):
    with (
        open(tmp_path / "pool.log", "w") as log,
        local_engines.portable_runner(workers=2, log=log) as engine,
    ):
        res = _extract(
            corpus, "portable", "--runner=beam", f"--beam_options={engine.beam_options}"
        )
    assert res.returncode == 1, res.stderr[-3000:]
    assert "broken.wav" in res.stderr and "Apache Beam (PortableRunner)" in res.stdout
    # The work ran in SDK worker processes the pool started (2 a pass), not
    # in this job's process.
    assert (tmp_path / "pool.log").read_text().count("Starting worker") == 4
    _assert_same_as_local(corpus, "portable")
    assert not os.path.exists(corpus / "portable" / "beam-staging")


def test_a_killed_sdk_worker_of_the_portable_runner_ends_the_job_naming_the_files(corpus):
    """Beam's reference job service waits forever for an SDK worker that was
    killed (Flink and Dataflow start another): the stall guard cancels the
    job and names the files; the same command on a new job service then
    completes the local pool's output."""
    with local_engines.portable_runner() as engine:
        flags = ("--runner=beam", f"--beam_options={engine.beam_options}")
        job = _start_extract(
            corpus,
            "portable-killed",
            *flags,
            "--engine_stall_seconds=5",
            "--progress_interval=1",
        )
        _wait_until_staged(job, corpus / "portable-killed" / "beam-staging")
        workers = _children(engine.processes[1].pid)  # the pool's
        assert workers, "the pool started an SDK worker process"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        last = _last_line(job)
    assert last.startswith("extract: the Apache Beam (PortableRunner) job failed ("), last
    assert "nothing finished for 5 s (engine_stall_seconds)" in last
    # Every file but the broken one (recorded as failed if it was staged so).
    assert re.search(r"1[67] of 17 files have no finished shard: .*track-001", last), last
    # That job service still waits on the lost job: the rerun uses a new one,
    # as a user would restart it.
    with local_engines.portable_runner() as engine:
        flags = ("--runner=beam", f"--beam_options={engine.beam_options}")
        rerun = _extract(corpus, "portable-killed", *flags)
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    _assert_same_as_local(corpus, "portable-killed")


def _kill_a_busy_worker(job, engine, staging) -> None:
    """SIGKILLs a Dask worker process while it runs a task, once featurizing
    is under way; the scheduler must then see one worker."""
    from dask.distributed import Client

    with Client(f"tcp://{engine.address}") as client:
        by_address = client.run(os.getpid)
        assert sorted(by_address.values()) == sorted(engine.worker_pids())
        _wait_until_staged(job, staging)
        deadline = time.monotonic() + 60
        while not (busy := [a for a, keys in client.processing().items() if keys]):
            assert time.monotonic() < deadline and job.poll() is None, "no task ran"
            time.sleep(0.01)
        os.kill(by_address[busy[0]], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(client.scheduler_info()["workers"]) != 1:
            assert time.monotonic() < deadline, (
                "the scheduler still lists the killed worker"
            )
            time.sleep(0.1)


def test_dask_with_two_workers_writes_the_local_shards_and_survives_a_killed_worker(corpus):
    with local_engines.dask_cluster(2) as engine:
        flags = ("--runner=dask", f"--dask_scheduler={engine.address}")
        res = _extract(corpus, "dask", *flags)
        assert res.returncode == 1, res.stderr[-3000:]
        assert "broken.wav" in res.stderr and f"Dask ({engine.address})" in res.stdout
        _assert_same_as_local(corpus, "dask")
        # A worker process killed mid-run: the scheduler gives its tasks to
        # the other; the job ends as if nothing happened.
        job = _start_extract(corpus, "dask-killed", *flags)
        _kill_a_busy_worker(job, engine, corpus / "dask-killed" / "beam-staging")
        assert "broken.wav" in _last_line(job)
    _assert_same_as_local(corpus, "dask-killed")


def test_a_killed_dask_worker_the_scheduler_will_not_retry_fails_naming_the_files(corpus):
    """With no retry allowed (allowed-failures 0), the job ends with one line
    naming the files without a finished shard; the same command then
    completes the local pool's output on the worker left."""
    no_retry = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    with local_engines.dask_cluster(2, **no_retry) as engine:
        flags = ("--runner=dask", f"--dask_scheduler={engine.address}")
        job = _start_extract(corpus, "dask-failed", *flags)
        _kill_a_busy_worker(job, engine, corpus / "dask-failed" / "beam-staging")
        last = _last_line(job)
        assert last.startswith(f"extract: the Dask ({engine.address}) job failed ("), last
        assert "KilledWorker" in last and "run the same command again" in last
        assert re.search(
            r"1[67] of 17 files have no finished shard: .*\.(wav|flac|ogg)", last
        )
        rerun = _extract(corpus, "dask-failed", *flags)
    assert rerun.returncode == 1, rerun.stderr[-3000:]
    _assert_same_as_local(corpus, "dask-failed")
