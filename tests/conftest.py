"""Shared test helpers: synthesized audio, written as real files."""

import os
import sys

import numpy as np
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# grpcio (the in-process PredictionService) logs connection INFO lines at exit.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def music_like(duration: float, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """[samples] float32: a few harmonic notes changing every 0.5 s, plus noise."""
    rng = np.random.default_rng(seed)
    n = int(duration * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    note_len = int(0.5 * sample_rate)
    for start in range(0, n, note_len):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = slice(start, min(start + note_len, n))
        for k in range(1, 6):
            out[seg] += np.sin(2 * np.pi * k * f0 * t[seg]) / k
    out += 0.02 * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def write_audio(path, duration, sample_rate=44100, channels=1, seed=0, subtype=None):
    """Writes a music-like file; the format follows the extension."""
    y = music_like(duration, sample_rate, seed)
    if channels > 1:
        y = np.stack([y] * channels, axis=1)
    soundfile.write(path, y, sample_rate, subtype=subtype)
    return path


def kill_after_checkpoints(argv, checkpoint_dir, count, env):
    """Starts argv, SIGKILLs it once `count` checkpoints are recorded; returns
    the last step recorded. Recorded: listed in the directory's `checkpoint`
    state file, what a resumed run reads (a kill between a checkpoint's files
    and that file leaves the files of one it will not resume from)."""
    import signal
    import subprocess
    import time

    import tensorflow as tf

    def steps():
        state = tf.train.get_checkpoint_state(str(checkpoint_dir))
        paths = state.all_model_checkpoint_paths if state else []
        return [int(p.rsplit("ckpt-", 1)[1]) for p in paths]

    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while len(steps()) < count and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert steps(), "no checkpoint before the kill"
    return max(steps())


def press_ctrl_c(argv, after_line: str, env):
    """Starts argv in a session of its own, and once a stderr line starts with
    `after_line`, sends SIGINT to all of its processes, as a terminal's Ctrl-C
    does; returns (exit status, the stderr after that line, the pids of its
    children then, all gone by the time this returns)."""
    import signal
    import subprocess
    import time

    def as_a_terminal_starts_it():  # where this runs in the background, SIGINT is ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=as_a_terminal_starts_it)  # fmt: skip
    for line in proc.stderr:
        if line.startswith(after_line):
            break
    assert proc.poll() is None, f"{argv[1]} ended before {after_line!r}"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()  # fmt: skip
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in children):
        assert time.monotonic() < deadline, f"workers {children} outlived {argv[1]}"
        time.sleep(0.05)
    return proc.returncode, rest, children


def write_manifest_like(template_dir, directory):
    """A manifest for hand-written shards in `directory`: the template's (its
    feature spec and statistics) listing the shards that are there."""
    import glob
    import json

    with open(os.path.join(template_dir, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["shards"] = [
        {"name": os.path.basename(p), "num_examples": None, "bytes": os.path.getsize(p)}
        for p in sorted(glob.glob(os.path.join(directory, "*.tfrecord")))
    ]
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def write_constant_shard(directory, value, template_dir, tracks=20):
    """One shard of `tracks` 100-frame examples whose features all equal
    `value` (NaN, or huge), with a manifest like `template_dir`'s."""
    import numpy as np
    import tensorflow as tf

    from m3bert_tf.data import records

    os.makedirs(directory, exist_ok=True)
    x = np.full((100, 324), value, np.float16)
    with tf.io.TFRecordWriter(os.path.join(directory, "shard-00000.tfrecord")) as writer:
        for i in range(tracks):
            writer.write(
                records.encode_example(x, np.zeros(324), np.ones(324), f"c{i}", 0, "c.wav")
            )
    write_manifest_like(template_dir, directory)


def user_env() -> dict:
    """The environment a user runs the binaries in (this file quiets TensorFlow
    for the test process itself; the binaries must do it on their own)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, "PYTHONPATH": ROOT}


def run_bin(name, *args):
    """[python, bin/<name>, *args] as a subprocess argv list."""
    return [sys.executable, os.path.join(ROOT, "bin", name), *args]


@pytest.fixture
def audio_dir(tmp_path):
    """A directory of 4 short files in different formats, rates and channels."""
    d = tmp_path / "audio"
    d.mkdir()
    write_audio(str(d / "a.wav"), 3.0, 44100, 1, seed=1, subtype="PCM_16")
    write_audio(str(d / "b.flac"), 4.0, 22050, 2, seed=2)
    write_audio(str(d / "c.ogg"), 3.5, 48000, 1, seed=3)
    (d / "sub").mkdir()
    write_audio(str(d / "sub" / "d.mp3"), 5.0, 32000, 2, seed=4)
    return d


def small_pipeline(data, batch_size=2):
    """The pretraining pipeline's config the stream tests share: 32-frame
    crops, windows of 8, a fifth of the tracks held out."""
    from m3bert_tf.data import pipeline

    return pipeline.PipelineConfig(
        data=data,
        max_frames=32,
        batch_size=batch_size,
        shuffle_buffer=8,
        holdout_percent=20,
    )


def extract_corpus(root, **corpus_kwargs) -> str:
    """Writes the example corpus under `root` and extracts it (4 examples
    per shard); returns the shard dir."""
    from m3bert_tf import extract
    from m3bert_tf.demo import corpus

    corpus.write_example_corpus(str(root / "corpus"), **corpus_kwargs)
    extract.run_extract(
        extract.ExtractConfig(
            input=str(root / "corpus" / "manifest.csv"),
            output_dir=str(root / "shards"),
            shard_size=4,
            progress_interval=1e9,
        ),  # fmt: skip
        log=lambda msg: None,
    )
    return str(root / "shards")


def extract_labeled(root, rows) -> str:
    """One-second clips labeled by `rows` of (track id, split, task, label),
    as a CSV manifest under `root`, extracted; returns the shard dir."""
    from m3bert_tf import extract

    lines = ["path,track_id,split,task,label"]
    for i, (track, split, task, label) in enumerate(rows):
        write_audio(str(root / f"{track}.wav"), 1.0, 22050, seed=i)
        lines.append(f"{track}.wav,{track},{split},{task},{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    extract.run_extract(
        extract.ExtractConfig(
            input=str(root / "labels.csv"), output_dir=str(root / "shards"),
            num_workers=1, progress_interval=1e9,
        ),
        log=lambda msg: None,
    )  # fmt: skip
    return str(root / "shards")


@pytest.fixture(scope="session")
def corpus_shards(tmp_path_factory):
    """The example corpus (12 tracks of at most 20 s) extracted once per session."""
    return extract_corpus(
        tmp_path_factory.mktemp("corpus"), num_tracks=12, max_duration=20.0
    )


@pytest.fixture(scope="session")
def pretrained_corpus(tmp_path_factory):
    """A 320-track example corpus (one task label per track), extracted and
    pre-trained with configs/tiny.flags once per session.

    Returns {"shards": dir, "pretrained": bin/pretrain model_dir}.
    """
    import subprocess

    root = tmp_path_factory.mktemp("pretrained")
    shards = extract_corpus(root, num_tracks=320, min_duration=6.0, max_duration=12.0)
    res = subprocess.run(
        run_bin("pretrain", f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}",
                f"--data={shards}", f"--model_dir={root / 'pretrain'}"),
        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return {"shards": shards, "pretrained": str(root / "pretrain")}


FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def make_run(directory, kind, max_frames=64):
    """A run directory holding a release-0.1.0 fixture model ("pretrained":
    its encoder, "finetuned": its multi-task model)."""
    import json
    import shutil

    os.makedirs(directory)
    name = {"pretrained": "encoder", "finetuned": "multitask"}[kind]
    shutil.copy(
        os.path.join(FIXTURES, f"{name}_v0.1.0.keras"),
        os.path.join(directory, f"{name}.keras"),
    )
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"max_frames": max_frames}, f)
    return str(directory)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """{"pretrained"|"finetuned": (run dir, export version dir)}."""
    from m3bert_tf.serving import export

    root = tmp_path_factory.mktemp("serving")
    out = {}
    for kind in ("pretrained", "finetuned"):
        run = make_run(root / kind, kind)
        out[kind] = (
            run,
            export.export_run(run, str(root / f"{kind}_export"), log=lambda m: None),
        )
    return out


class Servicer:
    """Answers PredictRequests from a loaded SavedModel as TF Serving does: a
    request that does not fit the signature (an input missing or extra, another
    dtype or rank or width) or that the graph refuses ends the call with
    INVALID_ARGUMENT and the message (raised as ValueError without a context)."""

    def __init__(self, path):
        import tensorflow as tf

        self.model = tf.saved_model.load(path)

    def Predict(self, request, context):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        try:
            signature = self.model.signatures[
                request.model_spec.signature_name or "serving_default"
            ]
            spec = signature.structured_input_signature[1]
            if set(request.inputs) != set(spec):
                raise ValueError(
                    f"inputs {sorted(request.inputs)}, the signature takes {sorted(spec)}"
                )
            inputs = {}
            for name, proto in request.inputs.items():
                value = tf.make_ndarray(proto)
                want = spec[name]
                if tf.as_dtype(proto.dtype) != want.dtype:
                    raise ValueError(
                        f"{name}: {tf.as_dtype(proto.dtype).name}, takes {want.dtype.name}"
                    )
                if not want.shape.is_compatible_with(value.shape):
                    raise ValueError(
                        f"{name}: shape {list(value.shape)}, takes {want.shape}"
                    )
                inputs[name] = value
            out = signature(**inputs)
        except (ValueError, tf.errors.InvalidArgumentError) as e:
            if context is None:
                raise ValueError(getattr(e, "message", str(e))) from None
            import grpc

            context.abort(grpc.StatusCode.INVALID_ARGUMENT, getattr(e, "message", str(e)))
        response = predict_pb2.PredictResponse()
        for name, value in out.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


# TF Serving takes messages of any size; gRPC's default is 4 MiB.
GRPC_UNLIMITED = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def prediction_server(path):
    """(started gRPC server, port): an in-process PredictionService answering
    from the SavedModel at `path` (`Servicer`) on 127.0.0.1; stop it with
    `server.stop(None)`."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    servicer = Servicer(path)

    class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return servicer.Predict(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(2), options=GRPC_UNLIMITED)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
