"""`bin/correlate`: what the encoder's cells track (paper Figs. 5-6).

    run_correlate(CorrelateConfig(model=..., input=..., output_dir=...))

Per frame of every input file (the features' framing: 2048-sample Hamming
windows, hop 1024, centered, at 44.1 kHz) nine librosa descriptors
(`DESCRIPTORS`), averaged over each group of k frames when the encoder
stacks k frames into one. Pearson's ρ of every cell of every encoder layer
with each descriptor over all frames of all files, for three sources:

- the model's encoder;
- the same architecture with random weights (what the structure alone gives);
- the 324 input channels as the model sees them (normalized as in training):
  what a cell could merely pass through.

Writes `top_cells.csv` (source, descriptor, rank, layer, cell, ρ),
`correlations.md` (best |ρ| per descriptor and source) and
`scatter_<descriptor>.png` (the best cell of each source against the
descriptor, on a sample of at most `SAMPLE` frames; ρ over all frames).
"""

import csv
import dataclasses
import io
import os
import time

import numpy as np

from m3bert_tf import schema
from m3bert_tf.evaluate import correlate_report
from m3bert_tf.evaluate.correlate_report import DESCRIPTORS, SOURCES
from m3bert_tf.fields import at_least
from m3bert_tf.io import storage

SAMPLE = 4000


@dataclasses.dataclass(frozen=True)
class CorrelateConfig:
    """One correlation of encoder cells with audio descriptors.

    Attributes:
      model: a run or export dir.
      input: audio: a file, a directory (searched recursively), a glob or a CSV.
      output_dir: where top_cells.csv, correlations.md and the plots go.
      top: cells listed per descriptor.
      seed: seed of the random-weight encoder.
    """

    model: str
    input: str
    output_dir: str
    top: int = 5
    seed: int = 0

    def __post_init__(self):
        at_least(self, 1, "top")


def descriptors(y: np.ndarray) -> np.ndarray:
    """[T, 9] float64 descriptors (`DESCRIPTORS` order) of a 44.1 kHz mono
    waveform, T = 1 + len(y) // 1024 as the features.

    Flux: the L2 norm of the spectrum's positive change from the previous
    frame (0 for the first); harmonic/percussive ratio: the share of the
    frame's energy in librosa's HPSS harmonic/percussive part.
    """
    import librosa

    sr, n_fft, hop = schema.SAMPLE_RATE, schema.N_FFT, schema.HOP_LENGTH
    spectrum = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, window=schema.WINDOW))
    flux = np.sqrt((np.maximum(np.diff(spectrum, axis=1), 0.0) ** 2).sum(0))
    harmonic, percussive = librosa.decompose.hpss(spectrum)
    h_energy, p_energy = (harmonic**2).sum(0), (percussive**2).sum(0)
    total = h_energy + p_energy + 1e-12
    rows = [
        librosa.feature.spectral_centroid(S=spectrum, sr=sr)[0],
        librosa.feature.spectral_bandwidth(S=spectrum, sr=sr)[0],
        librosa.feature.spectral_rolloff(S=spectrum, sr=sr)[0],
        np.concatenate([[0.0], flux]),
        librosa.feature.spectral_flatness(S=spectrum)[0],
        librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)[0],
        librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)[0],
        h_energy / total,
        p_energy / total,
    ]
    frames = min(len(r) for r in rows)
    return np.stack([r[:frames] for r in rows], 1).astype(np.float64)


def stack_frames(values: np.ndarray, k: int) -> np.ndarray:
    """[T, ...] -> [ceil(T / k), ...]: the mean of each group of k frames
    (the last group may be shorter), as the encoder's frame stack groups them."""
    if k == 1:
        return values
    starts = np.arange(0, len(values), k)
    return (
        np.add.reduceat(values, starts, axis=0)
        / np.diff(np.append(starts, len(values)))[
            (slice(None),) + (None,) * (values.ndim - 1)
        ]
    )


class Correlations:
    """Running sums for Pearson's ρ of C cells with D descriptors, and a
    uniform sample of frames for the plots."""

    def __init__(self, cells: int, seed: int = 0):
        self.n = 0
        self.sx = np.zeros(cells)
        self.sxx = np.zeros(cells)
        self.sy = np.zeros(len(DESCRIPTORS))
        self.syy = np.zeros(len(DESCRIPTORS))
        self.sxy = np.zeros((cells, len(DESCRIPTORS)))
        self.sample_x, self.sample_y = [], []
        self._rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """x [n, C] cell values, y [n, D] descriptors of the same frames."""
        x = x.astype(np.float64)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sxx += (x * x).sum(0)
        self.sy += y.sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += x.T @ y
        keep = self._rng.random(len(x)) < SAMPLE / max(self.n, SAMPLE)
        self.sample_x.append(x[keep].astype(np.float32))
        self.sample_y.append(y[keep])

    def rho(self) -> np.ndarray:
        """[C, D] Pearson's ρ (0 where a cell or descriptor is constant)."""
        n = max(self.n, 1)
        cov = self.sxy / n - np.outer(self.sx / n, self.sy / n)
        var_x = np.maximum(self.sxx / n - (self.sx / n) ** 2, 0.0)
        var_y = np.maximum(self.syy / n - (self.sy / n) ** 2, 0.0)
        scale = np.sqrt(np.outer(var_x, var_y))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(scale > 1e-12, cov / scale, 0.0)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.concatenate(self.sample_x), np.concatenate(self.sample_y)
        if len(x) > SAMPLE:
            keep = self._rng.choice(len(x), SAMPLE, replace=False)
            x, y = x[keep], y[keep]
        return x, y


def run_correlate(config: CorrelateConfig, log=print) -> dict:
    """Returns {"top": rows of top_cells.csv, "best": {source: {descriptor: row}},
    "files", "frames", "seconds", "markdown"}."""
    from m3bert_tf import datasets
    from m3bert_tf.evaluate.feature_sets import random_twin
    from m3bert_tf.features import audio, streaming
    from m3bert_tf.io import locks
    from m3bert_tf.io.progress import Progress
    from m3bert_tf.serving.api import load

    t0 = time.monotonic()
    loaded = datasets.find_tracks(config.input)
    if not loaded.tracks:
        raise FileNotFoundError(f"input={config.input}: no audio files found")
    model = load(config.model)
    twin = random_twin(model, config.seed)
    layers, hidden, k = model.num_layers, model.hidden_dim, model.frame_stack
    sums = {
        "model": Correlations(layers * hidden, config.seed),
        "random": Correlations(layers * hidden, config.seed),
        "input": Correlations(schema.NUM_FEATURES, config.seed),
    }
    progress = Progress("correlate", len(loaded.tracks), "files")
    skipped = [str(p) for p in loaded.problems]
    used = 0
    with locks.DirectoryLock(config.output_dir, "output_dir"):
        for done, track in enumerate(loaded.tracks, 1):
            progress.update(done)
            try:
                y = audio.load_audio(track.path)
                # One analysis window at least: shorter audio has no frame to correlate.
                audio.check_usable(
                    track.path, y, schema.SAMPLE_RATE, schema.N_FFT / schema.SAMPLE_RATE
                )
                described = stack_frames(descriptors(y), k)
            except (audio.AudioError, ValueError) as e:  # librosa's errors are ValueErrors
                skipped.append(str(e) if track.path in str(e) else f"{track.path}: {e}")
                log(f"correlate: skipped {skipped[-1]}")
                continue
            with streaming.spill_waveform(
                y, schema.SAMPLE_RATE, model.extractor, track.path
            ) as spilled:
                inputs = stack_frames(
                    model.window_features(spilled, 0, spilled.num_frames), k
                )
                for name, m in (("model", model), ("random", twin)):
                    frames = m.embed_track(spilled, layer="all")["frame_embeddings"]
                    n = min(len(frames), len(described))
                    sums[name].add(frames[:n].reshape(n, -1), described[:n])
            n = min(len(inputs), len(described))
            sums["input"].add(inputs[:n], described[:n])
            used += 1
        if not used:
            raise ValueError(
                f"input={config.input}: no usable audio file ({len(skipped)} skipped: "
                + "; ".join(skipped[:3])
                + ")"
            )
        return _write(config, sums, hidden, skipped, used, t0, log)


def _cell(source: str, index: int, hidden: int) -> tuple:
    """(layer, cell) of a flat index: input channels are ("input", channel name)."""
    if source == "input":
        block = next(b for b in schema.BLOCKS if b.start <= index < b.stop)
        return "input", f"{block.name}[{index - block.start}]"
    return index // hidden, index % hidden


def _best_per_layer(rho: np.ndarray, hidden: int) -> list[dict]:
    """Per encoder layer: its largest |ρ| over cells and descriptors, where."""
    out = []
    for layer in range(rho.shape[0] // hidden):
        block = np.nan_to_num(np.abs(rho[layer * hidden : (layer + 1) * hidden]), nan=0.0)
        cell, d = np.unravel_index(np.argmax(block), block.shape)
        value = float(rho[layer * hidden + cell, d])
        out.append(
            {"layer": layer, "cell": int(cell), "descriptor": DESCRIPTORS[d], "rho": value}
        )
    return out


def _write(config, sums, hidden, skipped, files, t0, log) -> dict:

    storage.makedirs(config.output_dir)
    rows, best = [], {s: {} for s in SOURCES}
    for source in SOURCES:
        rho = sums[source].rho()
        for d, descriptor in enumerate(DESCRIPTORS):
            order = np.argsort(-np.abs(rho[:, d]), kind="stable")[: config.top]
            for rank, index in enumerate(order, 1):
                layer, cell = _cell(source, int(index), hidden)
                row = {
                    "source": source, "descriptor": descriptor, "rank": rank,
                    "layer": layer, "cell": cell, "index": int(index),
                    "rho": float(rho[index, d]),
                }  # fmt: skip
                rows.append(row)
                if rank == 1:
                    best[source][descriptor] = row
    path = os.path.join(config.output_dir, "top_cells.csv")
    text = io.StringIO()
    writer = csv.DictWriter(text, ["source", "descriptor", "rank", "layer", "cell", "rho"])
    writer.writeheader()
    writer.writerows({k: v for k, v in r.items() if k != "index"} for r in rows)
    storage.write_atomic(path, text.getvalue())
    frames = sums["model"].n
    per_layer = {
        source: _best_per_layer(sums[source].rho(), hidden)
        for source in ("model", "random")
    }
    text = correlate_report.markdown(best, config, files, frames, skipped, per_layer)
    storage.write_atomic(os.path.join(config.output_dir, "correlations.md"), text)
    for descriptor in DESCRIPTORS:
        correlate_report.scatter(descriptor, best, sums, config.output_dir)
    return {
        "top": rows, "best": best, "per_layer": per_layer, "files": files, "frames": frames,
        "skipped": skipped, "seconds": time.monotonic() - t0, "markdown": text,
    }  # fmt: skip
