"""bin/embed's processes (`serving.embed_tracks`): where the model runs, how
its processes share the cores, and a worker that dies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, press_ctrl_c, run_bin, user_env, write_audio
from tolerances import assert_close_across_kernels

JOB = """
import json, sys
sys.path.insert(0, {root!r})
from m3bert_tf.serving import embed_job
if __name__ == "__main__":
    model, music, out, workers, model_in, layer = sys.argv[1:]
    config = embed_job.EmbedConfig(model=model, input=music, output_dir=out,
        num_workers=int(workers), model_in=model_in, layer=layer, progress_interval=1e9)
    try:
        result = embed_job.run_embed(config)
    except ValueError as e:
        result = {{"error": str(e)}}
    result["tensorflow_here"] = "tensorflow" in sys.modules
    print(json.dumps(result))
"""


def test_the_processes_running_the_model_share_the_cores():
    from m3bert_tf.serving.embed_job import model_threads

    # One model process: the cores the feature workers leave, never none.
    assert model_threads(2, cores=2) == 1
    assert model_threads(1, cores=2) == 1
    assert model_threads(0, cores=16) == 16  # features in this process: every core
    assert model_threads(4, cores=16) == 12
    assert model_threads(2, "tf", cores=2) == 2  # the workers only decode
    # Model workers: one each, however many cores are idle.
    assert model_threads(1, cores=2, layout="workers") == 1
    assert model_threads(4, cores=16, layout="workers") == 1


def test_feature_workers_yield_the_cpu_to_the_model_process(tmp_path):
    from m3bert_tf.serving import embed_tracks

    ours = os.nice(0)
    if ours >= 19:  # e.g. the suite itself run under `nice -n 19`
        pytest.skip("this process is at niceness 19: a worker cannot be niced further")
    workers = embed_tracks.FeatureWorkers(1, True, None, str(tmp_path))
    try:
        niceness = workers.call(os.nice, 0)
    finally:
        workers.close()
    assert niceness == min(ours + embed_tracks.WORKER_NICENESS, 19) > ours
    embed_tracks.FeatureWorkers(0, True, None, str(tmp_path)).close()  # here: not niced
    assert os.nice(0) == ours


def test_model_workers_embed_what_one_model_process_does(exported, tmp_path):
    """--model_in=workers (each worker featurizes, runs the model and writes
    its tracks' .npz; the job's process never imports TensorFlow) against
    --model_in=main (one model process batching windows across tracks): the
    same files fail, the same embeddings come out; an error loading the model
    in a worker is the job's error, raised before anything is written."""
    _, path = exported["finetuned"]
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        write_audio(str(music / f"t{i}.wav"), 2.0 + 3 * i, 44100, seed=i)
    (music / "silent.wav").write_bytes(b"")
    script = tmp_path / "job.py"
    script.write_text(JOB.format(root=ROOT))

    def job(out, workers, model_in, layer="last", audio=str(music)):
        argv = [sys.executable, str(script), path, audio, str(tmp_path / out),
                str(workers), model_in, layer]  # fmt: skip
        proc = subprocess.run(argv, env=user_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])

    by_workers, by_main = job("w", 2, "workers"), job("m", 1, "main")
    assert by_workers["model_in"] == "workers" and by_main["model_in"] == "main"
    assert not by_workers["tensorflow_here"] and by_main["tensorflow_here"]
    assert by_workers["embedded"] == by_main["embedded"] == 4
    assert by_workers["failed"] == by_main["failed"]
    assert [p["path"] for p in by_workers["failed"]] == [str(music / "silent.wav")]
    for i in range(4):
        with (
            np.load(tmp_path / "w" / f"t{i}.npz") as a,
            np.load(tmp_path / "m" / f"t{i}.npz") as b,
        ):
            assert sorted(a.files) == sorted(b.files)
            assert str(a["source_sha256"]) == str(b["source_sha256"]) != ""
            for key in set(a.files) - {"source_sha256"}:
                assert_close_across_kernels(a[key], b[key], what=key)
    assert by_workers["model_workers"] == 2
    # A rerun with one file left starts one model worker, not one per core.
    os.remove(tmp_path / "w" / "t2.npz")
    rerun = job("w", 2, "workers", audio=str(music / "t*.wav"))
    assert (rerun["embedded"], rerun["skipped"], rerun["model_workers"]) == (1, 3, 1)
    refused = job("x", 2, "workers", layer="7")
    assert "the model has 2 blocks" in refused["error"]
    assert not (tmp_path / "x").exists()


def test_a_worker_that_dies_ends_the_job_naming_the_files_in_flight():
    """A worker process killed mid-file (here it exits at once) is an error
    naming the files, not a job that waits for it forever."""
    from m3bert_tf.serving import embed_tracks

    workers = embed_tracks._Processes(1, os._exit, os.getpid, ())
    try:
        with pytest.raises(embed_tracks.WorkerDied, match="died .* in flight: 3"):
            list(workers.results([3], ordered=False))
    finally:
        workers.close()


def test_the_model_runs_in_the_workers_unless_a_gpu_or_no_workers(monkeypatch):
    from m3bert_tf.serving import embed_job

    def config(**kwargs):
        return embed_job.EmbedConfig(model="m", input="i", output_dir="o", **kwargs)

    monkeypatch.setattr(embed_job.glob, "glob", lambda pattern: [])
    assert embed_job.model_layout(config(num_workers=2)) == "workers"
    assert embed_job.model_layout(config(num_workers=0)) == "main"
    assert embed_job.model_layout(config(num_workers=2, model_in="main")) == "main"
    assert config().num_workers == embed_job.available_cores()
    monkeypatch.setattr(embed_job.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert embed_job.model_layout(config(num_workers=2)) == "main"  # one process holds it
    assert embed_job.model_layout(config(num_workers=2, model_in="workers")) == "workers"
    with pytest.raises(ValueError, match="model_in=workers needs num_workers >= 1"):
        config(num_workers=0, model_in="workers")


def test_ctrl_c_stops_an_embedding_and_its_model_workers_with_one_line(exported, tmp_path):
    _, path = exported["pretrained"]
    music = tmp_path / "music"
    music.mkdir()
    write_audio(str(tmp_path / "clip.wav"), 10.0, 44100, seed=1)
    for i in range(100):  # the job must still be running when Ctrl-C comes
        os.symlink(tmp_path / "clip.wav", music / f"c{i:03d}.wav")
    out = tmp_path / "emb"
    argv = run_bin("embed", f"--model={path}", f"--input={music}", f"--output_dir={out}",
                   "--num_workers=2", "--model_in=workers")  # fmt: skip
    status, stderr, children = press_ctrl_c(argv, "embed: 1/", user_env())
    assert status == 130 and stderr == "embed: interrupted\n", stderr
    assert len(children) >= 2  # the model workers (and the executor's helper), gone
    done = len(list(out.glob("*.npz")))
    assert 1 <= done < 100 and not (out / ".tmp").exists()
    proc = subprocess.run(argv, env=user_env(), capture_output=True, text=True)
    assert proc.returncode == 0 and f"{done} already done" in proc.stdout, proc.stderr
    assert len(list(out.glob("*.npz"))) == 100


@pytest.mark.parametrize(
    "window, hop, message",
    [
        (-1, None, "window_seconds must be >= 0"),
        (float("nan"), None, "window_seconds must be >= 0"),
        (None, -2.0, "hop_seconds must be >= 0"),
        (31.0, None, "window_seconds=31.0: at most 30 s"),
        (10.0, 12.0, "hop_seconds=12.0 must not exceed window_seconds=10"),
    ],
)
def test_the_python_api_checks_windows_as_bin_embed_does(window, hop, message):
    """One check (`windows.check_seconds`) for the API's `embed`/`embed_file`
    and bin/embed's config: a window of -1 s was taken by the API."""
    import types

    from m3bert_tf.serving import api, embed_job

    model = types.SimpleNamespace(frame_stack=1, window_frames=256)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        api.Model.plan(model, 1000, window, hop)
    with pytest.raises(ValueError, match=message.split(" ")[0]):
        embed_job.EmbedConfig(
            model="m", input="i", output_dir="o",
            window_seconds=0.0 if window is None else window,
            hop_seconds=0.0 if hop is None else hop,
        )  # fmt: skip
    assert len(api.Model.plan(model, 1000, None, None)) == 4  # the defaults still plan
