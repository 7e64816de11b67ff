"""The Python API: a trained model that embeds audio of any length.

    model = m3bert_tf.load("exports/m3bert/1")      # or a bin/pretrain / bin/finetune run
    out = model.embed(waveform, sample_rate)          # or model.embed_file(path)
    out["timestamps"]          # [T'] seconds, the center of each frame
    out["frame_embeddings"]    # [T', H] ([T', L, H] for layer="all")
    out["clip_embedding"]      # [H]     ([L, H])
    model.predict(waveform, sample_rate)              # {task: {name: value}}

Audio -> the extraction's features (same parameters; block-wise, so memory is
bounded by a window, not the track) -> the normalization the model was
trained with -> windows of at most 30 s (`serving.windows`) -> the model ->
frames stitched, clip embedding = mean over the track's frames.
"""

import contextlib
import os

import numpy as np

from m3bert_tf import runs, schema
from m3bert_tf.data import windows as windows_lib
from m3bert_tf.data.normalization import global_scale, model_inputs
from m3bert_tf.io import storage
from m3bert_tf.serving.backends import KerasBackend, SavedModelBackend
from m3bert_tf.serving.outputs import finish, padded, select_frames, signature_for

LAYERS = ("last", "all", "mean")  # or an integer, 0 = the first transformer block
FRONTENDS = ("auto", "tf", "librosa")


def parse_layer(layer) -> str | int:
    """ "last" | "all" | "mean" | N (0-based block index) from a flag or argument."""
    if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit()):
        return int(layer)
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS} or a block index, got {layer!r}")
    return layer


class Model:
    """A trained M3BERT: `m3bert_tf.load(path)` returns one.

    Attributes:
      kind: "pretrained" or "finetuned".
      sample_rate: 44100, the rate the features are computed at (any input
        rate is resampled).
      frame_seconds: seconds between output frames (hop x frame stack).
      hidden_dim, num_layers: the encoder's H and L.
      enrichment_dim: E of a fine-tuned model (its M3BERT embedding), else None.
      tasks: the fine-tuned model's TaskSpec dicts.
      window_frames: the default window (the training crop, at most 30 s).
    """

    sample_rate = schema.SAMPLE_RATE

    def __init__(self, backend, info: dict, source: str, frontend: str = "auto"):
        self.backend = backend
        self.info = info
        self.source = source
        self.kind = info["kind"]
        self.num_layers = info["encoder"]["num_layers"]
        self.hidden_dim = info["encoder"]["hidden_dim"]
        self.frame_stack = info["encoder"]["frame_stack"]
        self.enrichment_dim = info.get("enrichment_dim")
        self.tasks = info.get("tasks", [])
        self.frame_seconds = self.frame_stack * schema.HOP_LENGTH / schema.SAMPLE_RATE
        self.window_frames = windows_lib.default_window_frames(
            info["training_frames"], self.frame_stack
        )
        spec = info["input_spec"]
        self._feature_spec = spec.get("feature_spec") or {}
        self._extractor = None
        has_tf = "waveform_features" in backend.signatures
        if frontend not in FRONTENDS or (frontend == "tf" and not has_tf):
            raise ValueError(
                f"frontend={frontend!r}: use one of {FRONTENDS}"
                + ("" if has_tf else f" ({source} has no TensorFlow front end: librosa)")
            )
        self.frontend = (
            "tf" if frontend == "tf" or (frontend == "auto" and has_tf) else "librosa"
        )
        # The rate audio is handed to the features at: an export's TF front end
        # takes its --input_sample_rate; librosa's path resamples to 44.1 kHz.
        self.input_rate = (
            int(info.get("input_sample_rate") or schema.SAMPLE_RATE)
            if self.frontend == "tf"
            else schema.SAMPLE_RATE
        )
        self.normalization = spec["normalization"]
        self._global_scale = global_scale(spec["stats"]) if spec.get("stats") else None

    def __repr__(self):
        return (
            f"<m3bert_tf.Model {self.kind} L={self.num_layers} H={self.hidden_dim} "
            f"k={self.frame_stack} from {self.source}>"
        )

    # --- features ------------------------------------------------------------

    @property
    def extractor(self):
        """The librosa `FeatureExtractor` of the model's feature spec (built on first use)."""
        if self._extractor is None:
            from m3bert_tf.features import frames as frames_lib

            config = frames_lib.FeatureConfig.from_spec(self._feature_spec)
            self._extractor = frames_lib.FeatureExtractor(config)
        return self._extractor

    @contextlib.contextmanager
    def track(self, waveform, sample_rate: int, name: str = "waveform"):
        """A mono waveform at any rate as a track `embed_track` reads: through
        the TensorFlow front end (`ModelInputs`, in memory) or librosa's
        block-wise features (`features.streaming`, spilled to a temporary file)."""
        if self.frontend == "librosa":
            from m3bert_tf.features import streaming

            with streaming.spill_waveform(waveform, sample_rate, self.extractor, name) as t:
                yield t
            return
        yield self.model_inputs(waveform, sample_rate, name)

    def model_inputs(self, waveform, sample_rate: int, name: str = "waveform"):
        """`ModelInputs` of a mono waveform at any rate, by the TensorFlow front
        end: at most `MAX_FRONTEND_SECONDS` (refused before anything is
        resampled or allocated; the librosa front end takes any length)."""
        sample_rate = schema.check_sample_rate(sample_rate, name)
        y = np.asarray(waveform, np.float32)
        if y.ndim != 1 or not len(y):
            raise ValueError(f"{name}: a mono waveform [samples] is needed, got {y.shape}")
        from m3bert_tf.serving.graph import check_frontend_seconds

        check_frontend_seconds(len(y) / sample_rate, name)
        rate = self.input_rate  # what the front end takes (it resamples to 44.1 kHz)
        if sample_rate != rate:
            import soxr

            y = soxr.resample(y, sample_rate, rate, quality="HQ")
        y = y.astype(np.float32)
        out = self.backend.waveform_features(y[None], np.array([len(y)], np.int32))
        frames = out["features"][0, : int(out["frame_lengths"][0])]
        return ModelInputs(frames, name, len(y) / rate)

    def window_features(self, track, start: int, stop: int) -> np.ndarray:
        """[stop - start, 324] model inputs of a spilled track (`features.streaming`),
        normalized as in training (`data.normalization`), or of `ModelInputs`."""
        if isinstance(track, ModelInputs):
            return track.inputs[start:stop]
        return model_inputs(
            self.normalization, lambda: track.raw(start, stop),
            lambda: track.normalized(start, stop), self._global_scale,
        )  # fmt: skip

    def plan(self, num_frames: int, window_seconds=None, hop_seconds=None):
        """The windows of a track of `num_frames` frames (`windows.plan`);
        None or 0 seconds: the model's window, a hop of the window.

        Raises:
          ValueError: a window outside (0, 30] s or a hop outside (0, window]
            (`windows.check_seconds`, as bin/embed checks its flags).
        """
        windows_lib.check_seconds(window_seconds, hop_seconds)
        k = self.frame_stack
        window = (
            windows_lib.seconds_to_frames(window_seconds, k)
            if window_seconds
            else self.window_frames
        )
        hop = windows_lib.seconds_to_frames(hop_seconds, k) if hop_seconds else window
        if hop > window:
            raise ValueError(f"hop_seconds={hop_seconds} must not exceed the window")
        return windows_lib.plan(num_frames, window, hop, k)

    # --- embedding -----------------------------------------------------------

    def run_windows(self, batch: list[np.ndarray], signature: str) -> list[dict]:
        """Model outputs of several windows ([n_i, 324] each), one dict per window,
        cut to its real output frames."""
        out = self.backend(signature, *padded(batch))
        results = []
        for i in range(len(batch)):
            n = int(out["frame_lengths"][i]) if "frame_lengths" in out else None
            row = {}
            for key, value in out.items():
                if key == "frame_lengths":
                    continue
                v = value[i]
                if key.startswith("frame_"):
                    v = v[:, :n] if signature == "embed_all_layers" else v[:n]
                row[key] = v
            results.append(row)
        return results

    def batches(self, items, signature: str, batch_size: int = 8):
        """Runs windows through the model, `batch_size` at a time, in order.

        Args:
          items: iterable of (owner, spilled track, Window): windows of one or
            many tracks (consumed lazily, so tracks may be featurized as it goes).

        Yields:
          (owner, window, outputs of `run_windows`) per item.
        """
        group = []
        for item in items:
            group.append(item)
            if len(group) == batch_size:
                yield from self._run_group(group, signature)
                group = []
        if group:
            yield from self._run_group(group, signature)

    def _run_group(self, group, signature):
        batch = [self.window_features(track, w.start, w.stop) for _, track, w in group]
        outputs = self.run_windows(batch, signature)
        for (owner, _, window), out in zip(group, outputs, strict=True):
            yield owner, window, out

    def embed_track(self, track, layer="last", window_seconds=None, hop_seconds=None,
                    batch_size: int = 8) -> dict:  # fmt: skip
        """Embeddings of a spilled track (see `embed`)."""
        layer = self.check_layer(layer)
        plan = self.plan(track.num_frames, window_seconds, hop_seconds)
        signature = signature_for(layer)
        pieces = {}
        for _, w, out in self.batches(
            [(None, track, w) for w in plan], signature, batch_size
        ):
            for key, value in select_frames(out, w, self.frame_stack, signature).items():
                pieces.setdefault(key, []).append(value)
        frames = {key: np.concatenate(parts) for key, parts in pieces.items()}
        return finish(frames, layer, self.frame_stack)

    def check_layer(self, layer) -> str | int:
        """`parse_layer`, and a block index within the model's L."""
        layer = parse_layer(layer)
        if not isinstance(layer, str) and not -self.num_layers <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer}: the model has {self.num_layers} blocks (0..{self.num_layers - 1})"
            )
        return layer

    def embed(self, waveform, sample_rate: int, layer="last", window_seconds=None,
              hop_seconds=None) -> dict:  # fmt: skip
        """Embeddings of a mono waveform at any rate and of any length.

        Returns {"timestamps": [T'] seconds, "frame_embeddings": [T', H] (or
        [T', L, H] for layer="all"), "clip_embedding": [H] (or [L, H])}, float32,
        plus "frame_enrichment" [T', E] / "clip_enrichment" [E] for a fine-tuned
        model at layer="last". T' = ceil(T / k), T = 1 + samples at 44.1 kHz // 1024.
        """
        with self.track(waveform, sample_rate) as track:
            return self.embed_track(track, layer, window_seconds, hop_seconds)

    def embed_file(self, path: str, **kwargs) -> dict:
        """`embed` of an audio file (any format bin/extract reads; decoded with
        soundfile, block-wise for the librosa front end)."""
        if self.frontend == "tf":
            from m3bert_tf.features import audio

            with audio.open_sound(path) as sound:  # checked before it is decoded
                from m3bert_tf.serving.graph import check_frontend_seconds

                check_frontend_seconds(sound.frames / sound.samplerate, path)
            y = audio.load_audio(path)
            with self.track(y, schema.SAMPLE_RATE, path) as track:
                return self.embed_track(track, **kwargs)
        from m3bert_tf.features import streaming

        with streaming.spill_file(path, self.extractor) as track:
            return self.embed_track(track, **kwargs)

    def predict(self, waveform, sample_rate: int, batch_size: int = 8) -> dict:
        """{task: {class or output name: probability or value}} of a fine-tuned
        model on the whole track: the enrichment of every frame (windows
        stitched) pooled into one clip embedding, then the heads, as
        fine-tuning scores whole clips."""
        if "predict_clip" not in self.backend.signatures:
            raise ValueError(
                f"{self.source}: predict needs a fine-tuned model exported by this release"
            )
        total, count = 0.0, 0
        with self.track(waveform, sample_rate) as track:
            items = [(None, track, w) for w in self.plan(track.num_frames)]
            for _, w, out in self.batches(items, "embed", batch_size):
                kept = select_frames(out, w, self.frame_stack, "embed")["frame_enrichment"]
                total = total + kept.astype(np.float64).sum(0)
                count += len(kept)
        clip = (total / count).astype(np.float32)[None]
        out = self.backend.predict_clip(clip)
        result = {}
        for task in self.tasks:
            names = task["outputs"] if task["kind"] == "regression" else task["classes"]
            result[task["name"]] = dict(
                zip(names, out[task["name"]][0].astype(float).tolist(), strict=False)
            )
        return result


class ModelInputs:
    """A track's model inputs held in memory ([T, 324], normalized), from the
    TensorFlow front end; read as a spilled track is (`Model.window_features`)."""

    def __init__(self, inputs: np.ndarray, name: str = "waveform", duration_s: float = 0.0):
        self.inputs = inputs
        self.name = name
        self.num_frames = len(inputs)
        self.duration_s = duration_s

    def close(self) -> None:
        """Nothing to delete (a spilled track's interface)."""


def load(path: str, frontend: str = "auto") -> Model:
    """A trained model from an export version directory (`bin/export`) or a
    finished bin/pretrain or bin/finetune run directory.

    Args:
      frontend: how audio becomes features: "tf" (the TensorFlow front end
        inside an export; neither librosa nor soundfile is imported), "librosa"
        (the extractor itself, block-wise: memory bounded on long tracks), or
        "auto": "tf" where the export has it, else "librosa".
    """
    from m3bert_tf.serving import export

    run_dir, step = runs.at_step(path)
    if step is not None:  # a pretraining run's encoder snapshot: a learning curve's point
        model = runs.load_encoder(run_dir, step)
        backend = KerasBackend(
            model, runs.read_input_spec(run_dir) if frontend == "tf" else None
        )
        info = export.export_info(run_dir, "pretrained", backend.computations)
        info |= {"step": step, "model_digest": runs.model_digest(path)}
        return Model(backend, info, path, frontend)
    if str(path).endswith(".tflite"):  # an export's LiteRT file, export.json beside it
        from m3bert_tf.serving.litert import LiteRTBackend

        if not storage.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        info = runs.read_export_info(os.path.dirname(path) or ".")
        info = {**info, "model_digest": runs.model_digest(path)}
        return Model(LiteRTBackend(path, info), info, path, frontend)
    if not storage.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory (an export or a run directory)")
    if runs.is_export(path):
        try:
            info = runs.read_export_info(path)
            backend = SavedModelBackend(path)
        except FileNotFoundError:
            raise
        except Exception as e:  # cut or overwritten files: TensorFlow's errors vary
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(
                f"{path}: the export cannot be loaded ({type(e).__name__}: {first}); "
                "it is damaged: export the run again (bin/export)"
            ) from None
        return Model(backend, info, path, frontend)
    if not storage.exists(os.path.join(path, runs.CONFIG_NAME)):
        raise FileNotFoundError(
            f"{path}: neither an export (saved_model.pb) nor a run directory ({runs.CONFIG_NAME})"
        )
    model, kind = runs.load_model(path)
    # A run directory keeps librosa unless the TF front end is asked for.
    backend = KerasBackend(model, runs.read_input_spec(path) if frontend == "tf" else None)
    info = export.export_info(path, kind, backend.computations)
    return Model(backend, info, path, frontend)
