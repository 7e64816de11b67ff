"""`bin/embed`: audio files of any length -> embeddings, one .npz per track.

    run_embed(EmbedConfig(model="exports/m3bert/1", input="music/", output_dir="emb"))

Per track, `<output_dir>/<track_id>.npz` holds "timestamps" [T'] (seconds),
"frame_embeddings" [T', H] ([T', L, H] for --layer=all), "clip_embedding",
for a fine-tuned model at --layer=last also "frame_enrichment"/"clip_enrichment",
and "duration_s"; `index.csv` lists track_id, source_path, duration_s,
frames, file. Files are decoded and featurized block-wise (`features.streaming`,
into temporary files) and cut into windows for the model, by worker processes
that each also run the model, or ahead of one model process
(`embed_tracks`); each track's frames go to temporary files as they come:
memory is bounded by a block, a batch of windows and the number of tracks in
flight, not by any track's length. A track's .npz is written under a
temporary name and renamed, so a rerun skips exactly the finished tracks; a
file that cannot be decoded (or is silent) is reported and skipped.
"""

import dataclasses
import glob
import os
import shutil

from m3bert_tf import runs
from m3bert_tf.data import windows as windows_lib
from m3bert_tf.datasets.base import Problem
from m3bert_tf.fields import at_least, check_choices, choice
from m3bert_tf.io import locks, storage
from m3bert_tf.io.progress import Progress
from m3bert_tf.serving import embed_outputs, embed_tracks
from m3bert_tf.version import __version__

TMP_DIR = embed_outputs.TMP_DIR
FRONTENDS = ("librosa", "tf")  # how audio becomes features: the reference, or in-graph
# Where the model runs: in every worker (on whole tracks, on the CPU) or in
# the job's process (windows of several tracks per batch, fed by the workers).
MODEL_IN = ("auto", "workers", "main")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container's
    cpuset or `taskset` limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
      batch_size: windows per model call (of several tracks with model_in=main).
      num_workers: worker processes (default: one per core); 0 = everything
        in this process.
      progress_interval: seconds between progress lines.
      frontend: features by the librosa extractor (the reference, block-wise)
        or by the model's TensorFlow front end ("tf": workers decode, the
        front end runs where the model does).
      model_in: where the model runs: "workers": in every worker, which
        embeds whole tracks (the job scales with cores; the CPU only, each
        worker holding its own TensorFlow and model); "main": in this process,
        on windows of several tracks per batch, the workers only featurizing
        (one process holds the model, as a GPU wants); "auto": main on a
        machine with an NVIDIA GPU or with num_workers 0, else workers.
    """

    model: str
    input: str
    output_dir: str
    layer: str = "last"
    window_seconds: float = 0.0
    hop_seconds: float = 0.0
    batch_size: int = 8
    num_workers: int = dataclasses.field(default_factory=available_cores)
    progress_interval: float = 5.0
    frontend: str = choice("librosa", FRONTENDS)
    model_in: str = choice("auto", MODEL_IN)

    def __post_init__(self):
        from m3bert_tf.serving.api import parse_layer

        parse_layer(self.layer)
        check_choices(self)
        at_least(self, 1, "batch_size")
        at_least(self, 0, "num_workers")
        windows_lib.check_seconds(self.window_seconds, self.hop_seconds)
        if self.model_in == "workers" and self.num_workers == 0:
            raise ValueError("model_in=workers needs num_workers >= 1")


# --- parent side ------------------------------------------------------------------


def model_layout(config: EmbedConfig) -> str:
    """ "workers" or "main": `config.model_in`, "auto" resolved."""
    if config.model_in != "auto":
        return config.model_in
    gpu = bool(glob.glob("/dev/nvidia[0-9]*"))
    return "main" if config.num_workers == 0 or gpu else "workers"


def model_threads(
    num_workers: int, frontend: str = "librosa", cores: int | None = None,
    layout: str = "main",
) -> int:  # fmt: skip
    """TensorFlow threads for each process that runs the model: one per model
    worker (the parallelism is across files; one worker beside an idle core,
    tiny model, 30 s clips: 37 ms per clip with one thread, 42 with two, and
    one thread rounds alike for any worker count); a model process, the cores
    the feature workers leave, at least one (beside 2 busy workers on 2 cores
    the tiny model's batches took 30 ms with TensorFlow's default pools, 21 ms
    with one thread), and every core with the TF front end, whose workers
    only decode."""
    if layout == "workers":
        return 1
    cores = cores or available_cores()
    return cores if frontend == "tf" else max(1, cores - num_workers)


def claim_model_threads(config: EmbedConfig) -> None:
    """`model_threads` of a model process through the environment TensorFlow
    reads as it starts (a process of its own, before any op: bin/embed);
    model workers set their own (`embed_tracks.ModelWorkers`). The user's
    setting wins."""
    if model_layout(config) != "workers":
        embed_tracks.claim_tf_threads(model_threads(config.num_workers, config.frontend))


def model_feature_config(path: str):
    """The `FeatureConfig` of the model at `path` (an export or a run directory),
    from its JSON alone: no TensorFlow, so feature workers start while the
    model loads."""
    from m3bert_tf.features.config import FeatureConfig

    if str(path).endswith(".tflite"):  # export.json beside it
        path = os.path.dirname(path) or "."
    if runs.is_export(path):
        info = runs.read_export_info(path)
        return FeatureConfig.from_spec(info["input_spec"].get("feature_spec"))
    return FeatureConfig.from_spec(runs.read_input_spec(path).get("feature_spec"))


def run_embed(config: EmbedConfig) -> dict:
    """Embeds every track of `config.input`; returns {"embedded", "skipped",
    "failed", "seconds" (the job's clock, from the model loaded), "waiting_s"
    (of those, this process idle, waiting for its workers), "model_in"
    (the layout), "model_workers" (model workers started: at most one per
    file to do; 0 with model_in=main), ...}."""
    from m3bert_tf import datasets
    from m3bert_tf.features import workers as feature_workers
    from m3bert_tf.serving.api import parse_layer

    loaded = datasets.find_tracks(config.input)
    # Features and outputs stream to local files there until a track's .npz is whole.
    scratch = storage.LocalScratch(config.output_dir, TMP_DIR, prefix="m3bert-embed-")
    layout = model_layout(config)
    job = embed_tracks.TrackJob(
        parse_layer(config.layer), config.window_seconds or None,
        config.hop_seconds or None, config.batch_size, config.output_dir, scratch.path,
    )  # fmt: skip
    try:
        feature_config = None
        if config.frontend == "librosa":
            feature_config = model_feature_config(config.model)
            # Once, here: workers only read the caches.
            feature_workers.prepare(feature_config)
        if layout == "workers":
            # No more processes (each holding the model) than files to do.
            todo = embed_outputs.pending(loaded.tracks, config.output_dir)
            count = max(1, min(config.num_workers, todo))
            workers = embed_tracks.ModelWorkers(
                count,
                config.model,
                config.frontend,
                job,
                model_threads(count, layout=layout),
            )
        else:
            workers = embed_tracks.FeatureWorkers(
                config.num_workers, config.frontend == "tf", feature_config, scratch.path
            )
        try:
            model = None
            if layout == "workers":
                workers.check()  # refused now, before anything is written
            else:
                from m3bert_tf.serving.api import load

                model = load(config.model, frontend=config.frontend)
                embed_tracks.check_job(model, job)
            result = _run_checked(config, loaded, job, model, workers)
            started = workers.num_workers if layout == "workers" else 0
            return {**result, "model_in": layout, "model_workers": started}
        finally:
            workers.close()
    finally:
        scratch.close()


def _run_checked(config, loaded, job, model, workers) -> dict:
    # The model by its files' contents: the same path trained further is another model.
    model_digest = runs.model_digest(config.model)
    storage.makedirs(config.output_dir)
    with locks.DirectoryLock(config.output_dir, "output_dir"):
        settings = {
            "model_digest": model_digest, "layer": str(job.layer),
            "window_seconds": config.window_seconds, "hop_seconds": config.hop_seconds,
            "frontend": config.frontend,
        }  # fmt: skip
        embed_outputs.check_job(config.output_dir, {
            "settings": settings, "model": storage.abspath(config.model),
            "package_version": __version__,
        })  # fmt: skip
        shutil.rmtree(job.tmp_dir, ignore_errors=True)  # leftovers of a killed run
        os.makedirs(job.tmp_dir)
        try:
            return _embed_all(config, loaded, job, model, workers)
        finally:
            shutil.rmtree(job.tmp_dir, ignore_errors=True)


def _embed_all(config, loaded, job, model, workers) -> dict:
    tracks, refused = embed_outputs.usable_tracks(loaded.tracks, config.output_dir)
    todo, made = [], {}
    for t in tracks:
        path = embed_outputs.npz_path(config.output_dir, t.track_id)
        wrong = embed_outputs.readable(path) if storage.exists(path) else "missing"
        if wrong not in (None, "missing"):
            print(f"embed: {path} is {wrong}: embedding {t.path} again", flush=True)
            storage.remove(path)
        if wrong is None:
            made[t.path] = (path, embed_outputs.recorded_source(path))
        else:
            todo.append(t)
    # Done only for the same audio: the file under this id may have been
    # replaced, or be another file now (a source unreadable now is kept).
    digests = storage.sha256_many(list(made), "embed: checking sources")
    for t in tracks:
        path, recorded = made.get(t.path, (None, None))
        if recorded and digests[t.path] and recorded != digests[t.path]:
            print(f"embed: {t.path} is not the audio {path} was made from: "
                  "embedding it again", flush=True)  # fmt: skip
            storage.remove(path)
            todo.append(t)
    failed = [dataclasses.asdict(p) for p in loaded.problems + refused]
    for p in refused:
        print(f"embed: skipped {p}", flush=True)
    failed_now = []
    progress = Progress("embed", len(todo), "files", config.progress_interval)
    stats = {"files": 0, "audio_s": 0.0}
    if model is None:
        results = workers.embedded(todo)
    else:
        results = embed_tracks.embed_featurized(model, workers.featurized(todo, model), job)
    for _, result in results:
        if isinstance(result, Problem):
            failed_now.append(result)
        else:
            stats["files"] += 1
            stats["audio_s"] += result
        progress.update(stats["files"] + len(failed_now), _rate(stats, progress))
    rows = embed_outputs.write_index(config.output_dir, tracks)
    order = {t.path: i for i, t in enumerate(todo)}  # workers finish in any order
    failed += [
        dataclasses.asdict(p) for p in sorted(failed_now, key=lambda p: order[p.path])
    ]
    return {
        "embedded": stats["files"], "skipped": len(tracks) - len(todo),
        "failed": failed, "tracks": len(rows), "audio_s": stats["audio_s"],
        "seconds": progress.elapsed, "waiting_s": workers.waiting_s,
        "index": os.path.join(config.output_dir, embed_outputs.INDEX_NAME),
    }  # fmt: skip


def _rate(stats: dict, progress) -> str:
    return f"{stats['audio_s'] / 3600 / max(progress.elapsed, 1e-9):.3g} audio-h/s"
