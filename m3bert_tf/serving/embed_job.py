"""`bin/embed`: audio files of any length -> embeddings, one .npz per track.

    run_embed(EmbedConfig(model="exports/m3bert/1", input="music/", output_dir="emb"))

Per track, `<output_dir>/<track_id>.npz` holds "timestamps" [T'] (seconds),
"frame_embeddings" [T', H] ([T', L, H] for --layer=all), "clip_embedding",
for a fine-tuned model at --layer=last also "frame_enrichment"/"clip_enrichment",
and "duration_s"; `index.csv` lists track_id, source_path, duration_s,
frames, file. Files are decoded and featurized block-wise by worker processes
(`features.streaming`, into temporary files), windows from several tracks are
batched through the model, and each track's frames go to temporary files as
they come: memory is bounded by a block, a batch of windows and the number of
tracks in flight, not by any track's length. A track's .npz is written under a
temporary name and renamed, so a rerun skips exactly the finished tracks; a
file that cannot be decoded (or is silent) is reported and skipped.
"""

import dataclasses
import multiprocessing
import os
import shutil
import time

from m3bert_tf import runs, schema
from m3bert_tf.datasets.base import Problem, Track
from m3bert_tf.fields import at_least, check_choices, choice
from m3bert_tf.io import locks, storage
from m3bert_tf.io.progress import Progress
from m3bert_tf.serving import embed_outputs
from m3bert_tf.version import __version__

TMP_DIR = ".tmp"
FRONTENDS = ("librosa", "tf")  # how audio becomes features: the reference, or in-graph
# Feature workers run at a lower priority than the model's process, the one
# serial stage: with more processes than cores it is not preempted by the
# workers it waits for (2 workers on 2 cores, 64 x 30 s clips: its busy time
# per clip 24 -> 17 ms, the job 2-15 % faster in 9 of 9 paired runs; in the
# steady state ogg clips faster, WAV clips 3-5 % slower; docs/speed.md).
WORKER_NICENESS = 10


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """One embedding job.

    Attributes:
      model: an export version directory or a run directory.
      input: audio: a file, a directory (searched recursively), a glob or a CSV.
      output_dir: where the .npz files and index.csv go.
      layer: last | all | mean (of all blocks) | N (0-based block index).
      window_seconds: the window the model sees (at most 30); 0 = its
        training crop, at most 30 s.
      hop_seconds: between window starts; 0 = the window (no overlap).
      batch_size: windows per model call, across tracks.
      num_workers: decoding/feature processes; 0 = in the main process.
      progress_interval: seconds between progress lines.
      frontend: features by the librosa extractor (the reference, block-wise)
        or by the model's TensorFlow front end ("tf": workers decode, the
        front end runs beside the model).
    """

    model: str
    input: str
    output_dir: str
    layer: str = "last"
    window_seconds: float = 0.0
    hop_seconds: float = 0.0
    batch_size: int = 8
    num_workers: int = 1
    progress_interval: float = 5.0
    frontend: str = choice("librosa", FRONTENDS)

    def __post_init__(self):
        from m3bert_tf.serving.api import parse_layer

        parse_layer(self.layer)
        check_choices(self)
        at_least(self, 1, "batch_size")
        at_least(self, 0, "num_workers")
        if self.window_seconds < 0 or self.hop_seconds < 0:
            raise ValueError("window_seconds and hop_seconds must be >= 0")
        if self.window_seconds > 30.0:
            raise ValueError(f"window_seconds={self.window_seconds}: at most 30 s")
        if self.hop_seconds and self.hop_seconds > (self.window_seconds or 30.0):
            raise ValueError(
                f"hop_seconds={self.hop_seconds} must not exceed window_seconds={self.window_seconds or 30.0}"
            )


# --- worker side (librosa only) ------------------------------------------------

_EXTRACTOR = None
_TMP = None


def _init_worker(feature_config, tmp_dir) -> None:
    global _EXTRACTOR, _TMP
    from m3bert_tf.features import frames as frames_lib

    _EXTRACTOR, _TMP = frames_lib.FeatureExtractor(feature_config), tmp_dir
    _init_decoder()  # after the extractor has loaded every library it calls


def _featurize(track: Track):
    """track -> (track, detached SpilledTrack or Problem)."""
    from m3bert_tf.features import audio as audio_lib
    from m3bert_tf.features import streaming

    try:
        spilled = streaming.spill(
            streaming.file_samples(track.path), _EXTRACTOR, track.path,
            reject_silent=True, directory=_TMP, named=True,
        )  # fmt: skip
        return track, spilled.detach()
    except audio_lib.AudioError as e:
        reason = str(e).removeprefix(f"{track.path}: ")
        return track, Problem(track.path, reason)
    except Exception as e:  # an odd file must not end a long job
        return track, Problem(track.path, f"{type(e).__name__}: {e}")


def _decode(track: Track):
    """track -> (track, [samples] float32 at 44.1 kHz or Problem), for the TF front end."""
    from m3bert_tf.features import audio as audio_lib

    try:
        y = audio_lib.load_audio(track.path)
        audio_lib.check_usable(track.path, y, schema.SAMPLE_RATE, 0.0)
        return track, y
    except audio_lib.AudioError as e:
        return track, Problem(track.path, str(e).removeprefix(f"{track.path}: "))
    except Exception as e:  # an odd file must not end a long job
        return track, Problem(track.path, f"{type(e).__name__}: {e}")


def _init_decoder() -> None:
    """One BLAS thread per worker process, freed memory kept for the next file;
    a worker process yields the CPU to the model's (`WORKER_NICENESS`)."""
    from m3bert_tf.features import workers

    workers.configure()
    if multiprocessing.parent_process() is not None:  # a worker, not bin/embed itself
        os.nice(WORKER_NICENESS)


class _Workers:
    """The feature (or, for the TF front end, decoding) worker processes,
    started before the model loads so that their boot overlaps it; none for
    `num_workers` 0 (the work runs in this process)."""

    def __init__(self, num_workers: int, tf_frontend: bool, feature_config, tmp_dir: str):
        self.tf_frontend = tf_frontend
        if tf_frontend:
            self.work, init, init_args = _decode, _init_decoder, ()
        else:
            from m3bert_tf.features import workers

            workers.prepare(feature_config)  # once, here: workers only read the caches
            self.work, init, init_args = _featurize, _init_worker, (feature_config, tmp_dir)
        self.num_workers, self.pool = num_workers, None
        self.waiting_s = 0.0  # this process idle, waiting for a worker's result
        if num_workers == 0:
            init(*init_args)
        else:
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(num_workers, init, init_args)

    def in_order(self, tracks):
        """Yields `work(track)` of every track in order (at most 2 x workers ahead)."""
        if self.pool is None:
            yield from map(self.work, tracks)
            return
        pending = []
        for track in tracks + [None] * (2 * self.num_workers):
            if track is not None:
                pending.append(self.pool.apply_async(self.work, (track,)))
            if len(pending) > 2 * self.num_workers or (track is None and pending):
                started = time.perf_counter()
                result = pending.pop(0).get()
                self.waiting_s += time.perf_counter() - started
                yield result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _featurized(tracks, model, workers: _Workers):
    """Yields (track, SpilledTrack | ModelInputs | Problem) in order: librosa's
    features spilled by the workers, or (the TF front end) the workers' decoded
    audio through the model's TensorFlow front end here."""
    from m3bert_tf.features.streaming import SpilledTrack

    for track, result in workers.in_order(tracks):
        if isinstance(result, Problem):
            yield track, result
        elif workers.tf_frontend:
            yield track, model.model_inputs(result, schema.SAMPLE_RATE, track.path)
        else:
            yield track, SpilledTrack.attach(result)


# --- parent side ------------------------------------------------------------------


def model_threads(
    num_workers: int, frontend: str = "librosa", cores: int | None = None
) -> int:
    """TensorFlow threads for the model's process: the cores the feature
    workers leave, at least one (beside 2 busy workers on 2 cores the tiny
    model's batches took 30 ms with TensorFlow's default pools, 21 ms with
    one thread); every core with the TF front end, whose workers only decode."""
    cores = cores or os.cpu_count() or 1
    return cores if frontend == "tf" else max(1, cores - num_workers)


def claim_model_threads(num_workers: int, frontend: str = "librosa") -> None:
    """`model_threads` through the environment TensorFlow reads as it starts
    (a process of its own, before any op: bin/embed); the user's setting wins."""
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, str(model_threads(num_workers, frontend)))


def model_feature_config(path: str):
    """The `FeatureConfig` of the model at `path` (an export or a run directory),
    from its JSON alone: no TensorFlow, so feature workers start while the
    model loads."""
    import json

    from m3bert_tf.features.config import FeatureConfig
    from m3bert_tf.serving import export

    info = os.path.join(path, export.EXPORT_INFO_NAME)
    if storage.exists(os.path.join(path, "saved_model.pb")) and storage.exists(info):
        with storage.open(info) as f:
            return FeatureConfig.from_spec(json.load(f)["input_spec"].get("feature_spec"))
    return FeatureConfig.from_spec(runs.read_input_spec(path).get("feature_spec"))


def run_embed(config: EmbedConfig) -> dict:
    """Embeds every track of `config.input`; returns {"embedded", "skipped",
    "failed", "seconds" (the job's clock, from the model loaded), "waiting_s"
    (of those, this process idle, waiting for the feature workers), ...}."""
    from m3bert_tf import datasets
    from m3bert_tf.serving.api import load

    loaded = datasets.find_tracks(config.input)
    # Features and outputs stream to local files there until a track's .npz is whole.
    scratch = storage.LocalScratch(config.output_dir, TMP_DIR, prefix="m3bert-embed-")
    tf_frontend = config.frontend == "tf"
    try:
        feature_config = None if tf_frontend else model_feature_config(config.model)
        workers = _Workers(config.num_workers, tf_frontend, feature_config, scratch.path)
        try:
            model = load(config.model, frontend=config.frontend)
            return _run_loaded(config, loaded, model, scratch.path, workers)
        finally:
            workers.close()
    finally:
        scratch.close()


def _run_loaded(config, loaded, model, tmp_dir, workers) -> dict:
    # The model by its files' contents: the same path trained further is another model.
    model_digest = runs.model_digest(config.model)
    layer = model.check_layer(config.layer)  # a block index the model lacks: refused now
    window = config.window_seconds or None
    hop = config.hop_seconds or None
    model.plan(1, window, hop)  # refuses a hop longer than the window now, not per track
    storage.makedirs(config.output_dir)
    with locks.DirectoryLock(config.output_dir, "output_dir"):
        settings = {
            "model_digest": model_digest, "layer": str(layer),
            "window_seconds": config.window_seconds, "hop_seconds": config.hop_seconds,
            "frontend": config.frontend,
        }  # fmt: skip
        embed_outputs.check_job(config.output_dir, {
            "settings": settings, "model": storage.abspath(config.model),
            "package_version": __version__,
        })  # fmt: skip
        shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a killed run
        os.makedirs(tmp_dir)
        try:
            return _embed_all(config, model, layer, window, hop, loaded, tmp_dir, workers)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _embed_all(config, model, layer, window, hop, loaded, tmp_dir, workers) -> dict:
    from m3bert_tf.serving.api import reduce_layers, select_frames, signature_for

    tracks, refused = embed_outputs.usable_tracks(loaded.tracks, config.output_dir)
    todo = []
    for t in tracks:
        path = embed_outputs.npz_path(config.output_dir, t.track_id)
        wrong = embed_outputs.readable(path) if storage.exists(path) else "missing"
        if wrong not in (None, "missing"):
            print(f"embed: {path} is {wrong}: embedding {t.path} again", flush=True)
            storage.remove(path)
        if wrong is not None:
            todo.append(t)
    failed = [dataclasses.asdict(p) for p in loaded.problems + refused]
    for p in refused:
        print(f"embed: skipped {p}", flush=True)
    failed_now, in_flight = [], []  # outputs in flight: featurized, not yet written
    signature = signature_for(layer)
    progress = Progress("embed", len(todo), "files", config.progress_interval)
    stats = {"files": 0, "audio_s": 0.0}

    def windows():
        """(output, spilled track, window) of every track, featurized as consumed."""
        for track, result in _featurized(todo, model, workers):
            if isinstance(result, Problem):
                failed_now.append(result)
                progress.update(stats["files"] + len(failed_now), _rate(stats, progress))
                continue
            output = embed_outputs.TrackOutput(
                track, result, model.plan(result.num_frames, window, hop),
                embed_outputs.npz_path(config.output_dir, track.track_id), tmp_dir,
            )  # fmt: skip
            in_flight.append(output)
            yield from ((output, result, w) for w in output.plan)

    try:
        for output, w, out in model.batches(windows(), signature, config.batch_size):
            output.add(
                reduce_layers(select_frames(out, w, model.frame_stack, signature), layer)
            )
            if output.remaining == 0:
                output.write(model.frame_stack)
                in_flight.remove(output)
                stats["files"] += 1
                stats["audio_s"] += output.spilled.duration_s
                progress.update(stats["files"] + len(failed_now), _rate(stats, progress))
    finally:
        for output in in_flight:
            output.close()
    rows = embed_outputs.write_index(config.output_dir, tracks)
    failed += [dataclasses.asdict(p) for p in failed_now]
    return {
        "embedded": stats["files"], "skipped": len(tracks) - len(todo),
        "failed": failed, "tracks": len(rows), "audio_s": stats["audio_s"],
        "seconds": progress.elapsed, "waiting_s": workers.waiting_s,
        "index": os.path.join(config.output_dir, embed_outputs.INDEX_NAME),
    }  # fmt: skip


def _rate(stats: dict, progress) -> str:
    return f"{stats['audio_s'] / 3600 / max(progress.elapsed, 1e-9):.3g} audio-h/s"
