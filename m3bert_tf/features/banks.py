"""The extractor's constants, built with librosa once per environment and kept on disk.

    bank = banks.load(FeatureConfig())   # {name: ndarray}: from the cache, or built

The STFT window, the mel and chroma filter banks and the CQT's per-octave
FFT kernels are librosa's (`build`). Building them imports librosa, and with
it scipy.signal and numba: about 0.7 s of a process's start-up, paid by every
extraction worker and twice by a job's first file. So they are built once,
stored under the user's cache directory (`storage.user_cache_dir()`/banks) and
loaded from there: a worker then imports numpy, scipy.fft, soxr and
soundfile, and no librosa (the "authors" feature set still calls
librosa.feature.chroma_cqt).

A cache file is named by the SHA-256 of what its arrays are made from: the
feature config's full spec (`FeatureConfig.to_json`: sample rate, FFT size,
hop, tuning, feature set...), the versions of librosa and numpy, and the
source text of this module, the code that builds them. The key is also stored
inside; a file that does not load or holds another key is built again. Files
are written atomically (a temporary file renamed), so processes that build
the same bank at once leave one whole file.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from importlib import metadata

import numpy as np

from m3bert_tf import schema
from m3bert_tf.features.config import FeatureConfig
from m3bert_tf.io import storage

CQT_FMIN = 32.70319566257483  # C1 in Hz
CQT_BINS_PER_OCTAVE = 24
CQT_PREFIX = "cqt_"


def cache_key(config: FeatureConfig) -> str:
    """Hex SHA-256 of everything `build(config)` depends on."""
    versions = {}
    for package in ("librosa", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    with open(__file__, "rb") as f:
        source = hashlib.sha256(f.read()).hexdigest()
    content = json.dumps([config.to_json(), versions, source], sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def cache_path(config: FeatureConfig, key: str | None = None) -> str:
    """Where the bank of `config` (whose `cache_key` is `key`, when known) is kept."""
    key = key or cache_key(config)
    return os.path.join(storage.user_cache_dir(), "banks", f"{key}.npz")


def _read(path: str, key: str, names=None) -> dict[str, np.ndarray] | None:
    """The arrays stored at `path` (only `names` when given), or None when the
    file is missing, cut short or holds another key."""
    try:
        with np.load(path) as stored:
            if str(stored["key"]) != key:
                return None
            names = [n for n in stored.files if n != "key"] if names is None else names
            return {name: stored[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def ensure(config: FeatureConfig = FeatureConfig(), log=None) -> None:
    """Builds and stores the bank of `config` unless the cache holds it: run
    by a job's parent before its workers start, so that they only read it."""
    key = cache_key(config)
    if _read(cache_path(config, key), key, names=()) is None:
        load(config, log)


def load(config: FeatureConfig = FeatureConfig(), log=None) -> dict[str, np.ndarray]:
    """The arrays of `build(config)`, from the cache (built and stored first
    when missing, unreadable or keyed otherwise)."""
    key = cache_key(config)
    path = cache_path(config, key)
    bank = _read(path, key)
    if bank is not None:
        return bank
    if log is not None:
        log(f"building the feature filter banks once for this environment (into {path})")
    bank = build(config)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=os.path.dirname(path), prefix=".bank-", suffix=".tmp", delete=False
        ) as f:
            np.savez(f, key=np.array(key), **bank)
        os.replace(f.name, path)
    except OSError as e:  # a read-only cache: every process builds its own
        if log is not None:
            log(f"cannot cache the feature filter banks in {path} ({e.strerror or e})")
    return bank


def build(config: FeatureConfig) -> dict[str, np.ndarray]:
    """The constants of the extractor for `config`, computed with librosa.

    Returns:
      window: [2048] float32 periodic Hamming (librosa's get_window).
      mel: [128, 1025] float32 mel filter bank (Slaney, as librosa.filters.mel).
      chroma: [12, 1025] float32 chroma filter bank at `config.tuning`.
      cqt_*: the CQT kernels (`cqt_bank`) of a feature set that has them
        (`FeatureSet.cqt_kernels`).
    """
    import librosa

    sr, n_fft = schema.SAMPLE_RATE, schema.N_FFT
    bank = {
        "window": librosa.filters.get_window(schema.WINDOW, n_fft, fftbins=True),
        "mel": librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=schema.BLOCK["mel"].dim),
        "chroma": librosa.filters.chroma(
            sr=sr, n_fft=n_fft, n_chroma=schema.BLOCK["chroma"].dim, tuning=config.tuning
        ),
    }
    bank = {name: np.asarray(a, np.float32) for name, a in bank.items()}
    if config.variant.cqt_kernels:
        cqt = cqt_bank(
            sr, schema.HOP_LENGTH, CQT_FMIN, schema.BLOCK["cqt"].dim,
            CQT_BINS_PER_OCTAVE, tuning=config.tuning,
        )  # fmt: skip
        bank.update({CQT_PREFIX + name: a for name, a in cqt.items()})
    return bank


def cqt_part(bank: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `cqt_bank` arrays inside a `build` result, without their prefix."""
    n = len(CQT_PREFIX)
    return {name[n:]: a for name, a in bank.items() if name.startswith(CQT_PREFIX)}


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    # The bandwidth rule librosa applies to equal-tempered CQT bins.
    logf = np.log2(freqs)
    bpo = np.empty_like(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _two_factors(n: int) -> int:
    count = 0
    while n > 0 and n % 2 == 0:
        n //= 2
        count += 1
    return count


def cqt_bank(
    sample_rate: int,
    hop_length: int,
    fmin: float,
    n_bins: int,
    bins_per_octave: int,
    tuning: float = 0.0,
) -> dict[str, np.ndarray]:
    """The kernels of `librosa.cqt` with these arguments (its defaults otherwise:
    Hann wavelets, filter_scale 1, L1 norm, sparsity 0.01, soxr_hq between
    octaves), as `cqt.ConstantQ` needs them.

    Returns:
      early_factor: [] int, the decimation before the top octave (a power of 2).
      hops, n_ffts: [octaves] int, each octave's hop and FFT size at its rate,
        top octave first.
      halve: [octaves] bool, whether the signal is halved after the octave.
      basis_<i>: [filters, n_fft // 2 + 1] complex64 FFT kernels of octave i
        (librosa's sparsified rows, dense, zeros kept).
      sqrt_lengths: [n_bins] float64, the length normalization (divisor).
      hop_length: [] int.

    Raises:
      ValueError: the top bin's filter reaches past the Nyquist rate.
    """
    import librosa

    fmin = fmin * 2.0 ** (tuning / bins_per_octave)
    freqs = librosa.interval_frequencies(
        n_bins=n_bins, fmin=fmin, intervals="equal", bins_per_octave=bins_per_octave
    )
    alpha = _relative_bandwidth(freqs)
    _, cutoff = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sample_rate, window="hann", filter_scale=1, alpha=alpha
    )
    nyquist = sample_rate / 2.0
    if cutoff > nyquist:
        raise ValueError(
            f"CQT top bin needs {cutoff:.0f} Hz, above Nyquist {nyquist:.0f} Hz"
        )
    n_octaves = int(np.ceil(n_bins / bins_per_octave))
    n_filters = min(bins_per_octave, n_bins)
    count = min(
        max(0, int(np.ceil(np.log2(nyquist / cutoff)) - 1) - 1),
        max(0, _two_factors(hop_length) - n_octaves + 1),
    )
    early_factor = 2**count
    # After early downsampling, librosa measures gains and filter lengths at
    # the reduced rate.
    base_sr = sample_rate / early_factor
    sr, hop = base_sr, hop_length // early_factor
    out = {"hops": [], "n_ffts": [], "halve": []}
    for i in range(n_octaves):
        sl = slice(-n_filters * (i + 1), -n_filters * i if i else None)
        basis, flen = librosa.filters.wavelet(
            freqs=freqs[sl], sr=sr, filter_scale=1, norm=1, pad_fft=True,
            window="hann", alpha=alpha[sl],
        )  # fmt: skip
        n_fft = basis.shape[1]
        basis *= flen[:, None] / float(n_fft)
        fft_basis = librosa.get_fftlib().fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=np.complex64)
        fft_basis *= np.sqrt(base_sr / sr)
        out[f"basis_{i}"] = np.asarray(fft_basis.toarray(), np.complex64)
        halve = hop % 2 == 0
        out["hops"].append(hop)
        out["n_ffts"].append(n_fft)
        out["halve"].append(halve)
        if halve:
            hop //= 2
            sr /= 2.0
    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=base_sr, window="hann", filter_scale=1, alpha=alpha
    )
    return {
        **{name: np.asarray(out[name]) for name in ("hops", "n_ffts", "halve")},
        **{name: a for name, a in out.items() if name.startswith("basis_")},
        "early_factor": np.asarray(early_factor),
        "sqrt_lengths": np.sqrt(lengths),  # float64, as librosa divides
        "hop_length": np.asarray(hop_length),
    }
