"""bin/embed's processes: where a track becomes features and the features its .npz.

    job = TrackJob(layer="last", window_s=None, hop_s=None, batch_size=8,
                   output_dir="emb", tmp_dir="emb/.tmp")
    workers = ModelWorkers(2, "exports/m3bert/1", "librosa", job, feature_config)
    for track, result in workers.embedded(tracks): ...  # duration_s or a Problem

Two layouts (`embed_job.EmbedConfig.model_in`):

- Model workers (`ModelWorkers`): each worker process decodes, featurizes,
  runs the model on its own tracks and writes their .npz files; the job's
  process hands out tracks and counts. Nothing is serial, so the job scales
  with cores; each worker holds TensorFlow and the model, on the CPU.
- One model process (`FeatureWorkers` + `embed_featurized` in the job's
  process): the workers decode and featurize (or, for the TF front end, only
  decode), the job's process batches windows of several tracks through the
  model. The one process that holds the model is what a GPU wants; on CPUs
  it is a serial stage (docs/speed.md).

A worker that dies (killed, out of memory) ends the job with `WorkerDied`
naming the files it may have been on; finished tracks stay, and a rerun
skips them.
"""

import collections
import dataclasses
import multiprocessing
import os
import time
from concurrent import futures

from m3bert_tf import schema
from m3bert_tf.datasets.base import Problem, Track
from m3bert_tf.io import storage
from m3bert_tf.serving import embed_outputs

# Feature workers run at a lower priority than the model's process, the one
# serial stage: with more processes than cores it is not preempted by the
# workers it waits for (2 workers on 2 cores, 64 x 30 s clips: its busy time
# per clip 24 -> 17 ms, the job 2-15 % faster in 9 of 9 paired runs; in the
# steady state ogg clips faster, WAV clips 3-5 % slower; docs/speed.md).
WORKER_NICENESS = 10


class WorkerDied(RuntimeError):
    """A worker process ended without a result (killed, or out of memory)."""


@dataclasses.dataclass(frozen=True)
class TrackJob:
    """What turns a featurized track into `<output_dir>/<track id>.npz`.

    Attributes:
      layer: "last" | "all" | "mean" | a block index (`api.parse_layer`).
      window_s, hop_s: seconds, or None for the model's window / the window.
      batch_size: windows per model call.
      output_dir: where the .npz files go.
      tmp_dir: a local directory for the features and frames in flight.
    """

    layer: str | int
    window_s: float | None
    hop_s: float | None
    batch_size: int
    output_dir: str
    tmp_dir: str


def check_job(model, job: TrackJob) -> None:
    """Refuses, before any work, a block index `model` lacks or a hop longer
    than the window (ValueError)."""
    model.check_layer(job.layer)
    model.plan(1, job.window_s, job.hop_s)


def claim_tf_threads(threads: int) -> None:
    """`threads` TensorFlow threads for this process and its children, through
    the environment TensorFlow reads as it starts; the user's setting wins."""
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, str(threads))


def embed_featurized(model, featurized, job: TrackJob):
    """Runs tracks' features through the model, windows of several tracks
    per batch, and writes each track's .npz as its last window comes back.

    Args:
      featurized: iterable of (Track, SpilledTrack | ModelInputs | Problem),
        consumed as windows are needed.

    Yields:
      (Track, duration_s) per track written, (Track, Problem) per problem.
    """
    from m3bert_tf.serving.outputs import reduce_layers, select_frames, signature_for

    signature = signature_for(job.layer)
    in_flight, finished = [], []  # outputs featurized, not yet written; results to yield

    def windows():
        for track, result in featurized:
            if isinstance(result, Problem):
                finished.append((track, result))
                continue
            output = embed_outputs.TrackOutput(
                track, result, model.plan(result.num_frames, job.window_s, job.hop_s),
                embed_outputs.npz_path(job.output_dir, track.track_id), job.tmp_dir,
            )  # fmt: skip
            in_flight.append(output)
            yield from ((output, result, w) for w in output.plan)

    try:
        for output, w, out in model.batches(windows(), signature, job.batch_size):
            output.add(
                reduce_layers(
                    select_frames(out, w, model.frame_stack, signature), job.layer
                )
            )
            if output.remaining == 0:
                output.write(model.frame_stack)
                in_flight.remove(output)
                finished.append((output.track, output.spilled.duration_s))
            yield from finished
            finished.clear()
        yield from finished
    finally:
        for output in in_flight:
            output.close()


class _Processes:
    """`work(item)` in spawned worker processes, ahead of the consumer (at
    most 2 x workers in flight); for `num_workers` 0, in this process."""

    def __init__(self, num_workers: int, work, init, init_args):
        self.work, self.num_workers = work, num_workers
        self.waiting_s = 0.0  # this process idle, waiting for a worker's result
        self._executor = None
        if num_workers == 0:
            init(*init_args)
        else:
            self._executor = futures.ProcessPoolExecutor(
                num_workers, multiprocessing.get_context("spawn"), _start_worker,
                (init, *init_args),
            )  # fmt: skip
            # A spawning executor starts a process per task submitted while
            # none is idle: all of them now, booting while the job prepares.
            for _ in range(num_workers):
                self._executor.submit(os.getpid)

    def call(self, fn, *args):
        """`fn(*args)` in one worker (here for 0 workers); raises what it raised."""
        if self._executor is None:
            return fn(*args)
        return self._result(self._executor.submit(fn, *args), [], timed=False)

    def results(self, items, ordered: bool = True):
        """Yields `work(item)` of every item, in order or as each finishes."""
        if self._executor is None:
            yield from map(self.work, items)
            return
        items, pending = iter(items), collections.OrderedDict()
        while True:
            while len(pending) < 2 * self.num_workers:
                item = next(items, None)
                if item is None:
                    break
                pending[self._executor.submit(self.work, item)] = item
            if not pending:
                return
            if ordered:
                done = [next(iter(pending))]
            else:
                started = time.perf_counter()
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                self.waiting_s += time.perf_counter() - started
            for future in done:
                yield self._result(future, list(pending.values()))
                del pending[future]

    def _result(self, future, in_flight, timed: bool = True):
        started = time.perf_counter()
        try:
            return future.result()
        except futures.process.BrokenProcessPool:
            names = ", ".join(getattr(t, "path", str(t)) for t in in_flight) or "(no file)"
            raise WorkerDied(
                f"a worker process died (killed, or out of memory?) with these in flight: {names}"
            ) from None
        finally:
            if timed:  # waiting for work, not for a worker to start
                self.waiting_s += time.perf_counter() - started

    def close(self) -> None:
        """Stops the workers, also in the middle of a file (its temporary
        files are the job's to remove)."""
        if self._executor is None:
            return
        # Python < 3.14 has no public way to stop a worker mid-task.
        for process in list((self._executor._processes or {}).values()):
            process.terminate()
        self._executor.shutdown(wait=True, cancel_futures=True)


# --- worker side --------------------------------------------------------------

_EXTRACTOR = None  # the librosa extractor of a worker that featurizes
_TMP = None  # where it spills features
_MODEL = None  # a model worker's (Model, TrackJob), or what loading them raised


def _start_worker(init, *init_args) -> None:
    from m3bert_tf.features import workers

    workers.leave_interrupts_to_the_job()  # the job's process stops us
    init(*init_args)


def _init_feature_worker(feature_config, tmp_dir) -> None:
    global _EXTRACTOR, _TMP
    from m3bert_tf.features import frames as frames_lib

    _EXTRACTOR, _TMP = frames_lib.FeatureExtractor(feature_config), tmp_dir
    _init_decoder()  # after the extractor has loaded every library it calls


def _init_decoder(niceness: int = WORKER_NICENESS) -> None:
    """One BLAS thread per worker process, freed memory kept for the next
    file; a worker process yields the CPU to the model's by `niceness`."""
    from m3bert_tf.features import workers

    workers.configure()
    if niceness and multiprocessing.parent_process() is not None:  # not bin/embed itself
        os.nice(niceness)


def _featurize(track: Track):
    """track -> (track, detached SpilledTrack or Problem)."""
    from m3bert_tf.features import audio as audio_lib
    from m3bert_tf.features import samples, streaming

    try:
        spilled = streaming.spill(
            samples.file_samples(track.path), _EXTRACTOR, track.path,
            reject_silent=True, directory=_TMP, named=True,
        )  # fmt: skip
        track.source_sha256 = storage.sha256(track.path)  # what the .npz is made from
        return track, spilled.detach()
    except Exception as e:
        if storage.is_output_error(e):  # the scratch disk's, not the file's: the job stops
            raise storage.OutputError(e.errno, e.strerror, e.filename or _TMP) from None
        return track, Problem.from_error(track.path, e, audio_lib.AudioError)


def _decode(track: Track):
    """track -> (track, [samples] float32 at 44.1 kHz or Problem), for the TF front end."""
    from m3bert_tf.features import audio as audio_lib

    try:
        y = audio_lib.load_audio(track.path)
        audio_lib.check_usable(track.path, y, schema.SAMPLE_RATE, 0.0)
        track.source_sha256 = storage.sha256(track.path)  # what the .npz is made from
        return track, y
    except Exception as e:
        return track, Problem.from_error(track.path, e, audio_lib.AudioError)


def _model_input(model, track: Track, result):
    """A worker's result -> what `embed_featurized` takes: the spilled track
    attached here, or decoded audio through the model's TF front end."""
    from m3bert_tf.features.streaming import SpilledTrack

    if isinstance(result, Problem):
        return track, result
    if model.frontend == "tf":
        return track, model.model_inputs(result, schema.SAMPLE_RATE, track.path)
    return track, SpilledTrack.attach(result)


def _init_model_worker(model_path: str, frontend: str, job: TrackJob, threads: int) -> None:
    """Loads the model on this process's CPU with `threads` TensorFlow threads
    (unless the user set them) and checks `job` against it; an error is kept
    and raised by each task (`_check_model`, `_embed_whole`)."""
    global _EXTRACTOR, _TMP, _MODEL
    from m3bert_tf.io import logs

    logs.quiet_tensorflow_import()  # as quiet as the job's process
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # N copies must not share one GPU
    claim_tf_threads(threads)
    try:
        from m3bert_tf.serving.api import load

        model = load(model_path, frontend=frontend)
        check_job(model, job)
        _EXTRACTOR = model.extractor if model.frontend == "librosa" else None
        _TMP, _MODEL = job.tmp_dir, (model, job)
    except Exception as e:  # raised in the job's process by the first task
        _MODEL = e
    _init_decoder(niceness=0)  # nothing here waits for it


def _check_model() -> None:
    if isinstance(_MODEL, Exception):
        raise _MODEL


def _embed_whole(track: Track):
    """track -> (track, duration_s or Problem), its .npz written (a model worker)."""
    _check_model()
    model, job = _MODEL
    _, result = (_decode if model.frontend == "tf" else _featurize)(track)
    return list(embed_featurized(model, [_model_input(model, track, result)], job))[0]


# --- the job's side -----------------------------------------------------------


class ModelWorkers(_Processes):
    """Processes that each embed whole tracks, the model loaded in each."""

    def __init__(self, num_workers: int, model_path: str, frontend: str, job: TrackJob,
                 threads: int = 1):  # fmt: skip
        super().__init__(
            num_workers,
            _embed_whole,
            _init_model_worker,
            (model_path, frontend, job, threads),
        )

    def check(self) -> None:
        """Raises what loading the model or checking the job raised in a worker
        (a missing model, a block index it lacks, a hop over the window)."""
        self.call(_check_model)

    def embedded(self, tracks):
        """(track, duration_s or Problem) of every track, as the workers finish them."""
        return self.results(tracks, ordered=False)


class FeatureWorkers(_Processes):
    """The feature (or, for the TF front end, decoding) processes of one model
    process, started before the model loads so that their boot overlaps it."""

    def __init__(self, num_workers: int, tf_frontend: bool, feature_config, tmp_dir: str):
        if tf_frontend:
            super().__init__(num_workers, _decode, _init_decoder, ())
        else:
            super().__init__(
                num_workers, _featurize, _init_feature_worker, (feature_config, tmp_dir)
            )

    def featurized(self, tracks, model):
        """(track, SpilledTrack | ModelInputs | Problem) of every track, in order."""
        for track, result in self.results(tracks):
            yield _model_input(model, track, result)
