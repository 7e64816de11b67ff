"""A built-in example corpus of synthesized, music-like audio with labels.

No downloads: every track is rendered from a seed. A track has a chord
progression (pad), a bass line, a lead melody arpeggiating the chords and a
drum pattern; its labels are things a model can learn from the audio:

- genre (4 classes): the rhythm, i.e. drum pattern, meter and tempo range.
- instrument (4 classes): the lead timbre (organ, square, saw, pluck), each
  with its own envelope (steady, 7 Hz tremolo, slow swell, fast decay).
- valence (regression in [-1, 1]): mostly the lead's articulation (legato
  high, staccato low), partly the major (positive) or minor (negative) mode.
  Per-track CMVN removes whatever is constant over a track (a fixed
  brightness, say), so the labels rest on what changes in time.
- arousal (regression in [-1, 1]): the tempo, shifted by drum loudness.

Files are written in several formats (wav int16, flac, ogg, mp3), sample
rates and channel counts so the decoder is exercised. The corpus directory
holds `audio/`, `metadata.csv` (every label of every track) and
`manifest.csv` in the generic `path,track_id,split,task,label` layout, in
which each track carries the labels of one task only (as in multi-task
fine-tuning, where each dataset labels one task) and splits are by track.
"""

import csv
import os

import numpy as np
import soundfile

from m3bert_tf.io import storage

# style: (tempo range in bpm, grid steps per bar, {drum: grid steps hit})
STYLES = {
    "ballad": ((60, 76), 16, {"kick": [0], "snare": [8]}),
    "waltz": ((84, 100), 12, {"kick": [0], "hat": [4, 8]}),
    "rock": (
        (108, 132),
        16,
        {"kick": [0, 8], "snare": [4, 12], "hat": list(range(0, 16, 2))},
    ),
    "dance": (
        (120, 134),
        16,
        {"kick": [0, 4, 8, 12], "snare": [4, 12], "hat": [2, 6, 10, 14]},
    ),
}
INSTRUMENTS = ("organ", "square", "saw", "pluck")
GENRES = tuple(STYLES)
TASKS = ("genre", "instrument", "valence", "arousal")
FORMATS = ((".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS"), (".mp3", None))
SAMPLE_RATES = (22050, 32000, 44100, 48000)
MAJOR = (0, 4, 7)
MINOR = (0, 3, 7)
# Progressions as scale-degree roots in semitones (I V vi IV / i VI III VII).
PROGRESSIONS = {"major": (0, 7, 9, 5), "minor": (0, 8, 3, 10)}


def _harmonics(
    instrument: str, f0: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(1, 16)
    k = k[k * f0 < 0.45 * sample_rate]
    if instrument == "organ":
        amps = np.array([1.0, 0.5, 0.3, 0.2] + [0.0] * 11)[: len(k)]
    elif instrument == "square":
        amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
    else:  # saw and pluck share a 1/k spectrum; pluck decays fast
        amps = 1.0 / k
    return k, amps


def _tone(instrument, f0, duration, sample_rate, brightness=1.0):
    """One note: [samples] float32, additive harmonics under an envelope."""
    n = max(int(duration * sample_rate), 1)
    t = np.arange(n) / sample_rate
    k, amps = _harmonics(instrument, f0, sample_rate)
    amps = amps * brightness ** (k - 1)
    sounding = amps != 0  # the organ's upper and the square's even partials are silent:
    k, amps = k[sounding], amps[sounding]  # not computing them is most of the speed
    if instrument == "pluck":
        # Higher partials die out faster, like a plucked string.
        env = np.exp(-t[:, None] * (3.0 + 2.0 * k[None, :]))
        wave = (np.sin(2 * np.pi * f0 * t[:, None] * k[None, :]) * env) @ amps
    else:
        wave = np.sin(2 * np.pi * f0 * t[:, None] * k[None, :]) @ amps
        # Each timbre also moves in time (per-track CMVN hides a fixed spectrum):
        # the organ holds steady, the square trembles at 7 Hz, the saw swells.
        attack_s = 0.12 if instrument == "saw" else 0.01
        attack = np.minimum(t / attack_s, 1.0)
        release = np.minimum((duration - t) / 0.03, 1.0).clip(0, 1)
        wave = wave * attack * release
        if instrument == "square":
            wave = wave * (1.0 - 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 7.0 * t)))
    return (wave / max(np.sum(np.abs(amps)), 1e-9)).astype(np.float32)


def _drum(kind, sample_rate, rng):
    n = int(0.25 * sample_rate)
    t = np.arange(n) / sample_rate
    if kind == "kick":
        phase = 2 * np.pi * (50 * t + (100 / 30) * (1 - np.exp(-30 * t)))
        return (np.sin(phase) * np.exp(-t / 0.12)).astype(np.float32)
    noise = rng.standard_normal(n).astype(np.float32)
    if kind == "snare":
        body = np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05)
        return (0.6 * noise * np.exp(-t / 0.08) + 0.5 * body).astype(np.float32)
    hat = np.diff(noise, prepend=0.0) * np.exp(-t / 0.02)  # high-passed noise
    return (0.3 * hat).astype(np.float32)


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def synthesize_track(rng, genre, instrument, mode, duration, sample_rate):
    """Renders one track.

    Returns:
      (audio [samples] float32 in [-1, 1], {"tempo": bpm, "brightness": b,
       "articulation": fraction of each lead step a note sounds, "drum_gain": g}).
    """
    (lo, hi), steps, pattern = STYLES[genre]
    tempo = float(rng.uniform(lo, hi))
    brightness = float(rng.uniform(0.55, 0.95))
    articulation = float(rng.uniform(0.2, 1.0))
    drum_gain = float(rng.uniform(0.5, 1.0))
    key = int(rng.integers(55, 67))  # lead register around G3..F#4
    n = int(duration * sample_rate)
    out = np.zeros(n + sample_rate, dtype=np.float32)
    beat = 60.0 / tempo
    step = beat / 4
    bar = steps * step
    triad = MAJOR if mode == "major" else MINOR
    drums = {kind: _drum(kind, sample_rate, rng) for kind in ("kick", "snare", "hat")}

    notes = {}  # a track repeats few distinct notes: render each once

    def tone(instrument_name, midi, length, bright):
        key_ = (instrument_name, midi, length, bright)
        if key_ not in notes:
            notes[key_] = _tone(
                instrument_name, _midi_hz(midi), length, sample_rate, bright
            )
        return notes[key_]

    def add(signal, start_s, gain):
        i = int(start_s * sample_rate)
        if i < n:
            m = min(len(signal), len(out) - i)
            out[i : i + m] += gain * signal[:m]

    num_bars = int(np.ceil(duration / bar))
    for b in range(num_bars):
        root = key + PROGRESSIONS[mode][b % 4]
        t0 = b * bar
        chord = [root - 12 + iv for iv in triad]
        for note in chord:  # pad
            add(tone("organ", note, bar, 0.5), t0, 0.08)
        for q in range(steps // 4):  # bass on every beat
            add(tone("organ", root - 24, beat * 0.9, 0.4), t0 + q * beat, 0.25)
        arp = [root + iv for iv in triad] + [root + 12]
        for s in range(0, steps, 2):  # lead: eighth-note arpeggio
            note = arp[(s // 2) % len(arp)]
            add(
                tone(instrument, note, 2 * step * articulation, brightness),
                t0 + s * step,
                0.3,
            )
        for kind, hits in pattern.items():
            for s in hits:
                add(drums[kind], t0 + s * step, 0.5 * drum_gain)
    out = out[:n]
    out /= max(float(np.max(np.abs(out))), 1e-9) / 0.8
    return out, {
        "tempo": tempo, "brightness": brightness, "articulation": articulation, "drum_gain": drum_gain,
    }  # fmt: skip


def track_labels(genre, instrument, mode, info) -> dict:
    """The four labels of a track (regression targets in [-1, 1])."""
    # Mostly articulation, partly the mode: a mode over 12 keys is too subtle
    # to learn from a few dozen tracks.
    valence = 0.7 * (info["articulation"] - 0.6) / 0.4 + (0.3 if mode == "major" else -0.3)
    arousal = (info["tempo"] - 97.0) / 37.0 * 0.8 + 0.4 * (info["drum_gain"] - 0.75)
    return {
        "genre": genre,
        "instrument": instrument,
        "valence": round(float(np.clip(valence, -1, 1)), 4),
        "arousal": round(float(np.clip(arousal, -1, 1)), 4),
    }


def _write_audio(path, audio, sample_rate, subtype, block=1 << 16):
    """soundfile.write, a block of frames at a time: libsndfile's Vorbis and
    MP3 encoders crash (SIGSEGV) on one write of about a minute of audio."""
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with soundfile.SoundFile(path, "w", sample_rate, channels, subtype=subtype) as f:
        for start in range(0, len(audio), block):
            f.write(audio[start : start + block])


def write_example_corpus(
    out_dir: str,
    num_tracks: int = 160,
    seed: int = 0,
    min_duration: float = 6.0,
    max_duration: float = 40.0,
) -> list[dict]:
    """Writes `num_tracks` synthesized tracks and their label files.

    Durations are uniform in [min_duration, max_duration] s. Genres,
    instruments and the one task each track is labeled for are balanced and
    drawn independently; splits are 60/20/20 by track within each task.

    Returns:
      One dict per track: path, track_id, split, task, duration, the four labels.
    """
    rng = np.random.default_rng(seed)
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    # Balanced, independent draws: no label may predict another, or the split.
    genres = rng.permutation(np.resize(GENRES, num_tracks))
    instruments = rng.permutation(np.resize(INSTRUMENTS, num_tracks))
    tasks = rng.permutation(np.resize(TASKS, num_tracks))
    splits = np.empty(num_tracks, dtype=object)
    for task in TASKS:  # 60/20/20 within each task
        idx = rng.permutation(np.flatnonzero(tasks == task))
        cut1, cut2 = round(0.6 * len(idx)), round(0.8 * len(idx))
        splits[idx[:cut1]], splits[idx[cut1:cut2]], splits[idx[cut2:]] = (
            "train",
            "valid",
            "test",
        )
    rows = []
    for i in range(num_tracks):
        genre, instrument = str(genres[i]), str(instruments[i])
        mode = ("major", "minor")[int(rng.integers(2))]
        duration = float(rng.uniform(min_duration, max_duration))
        sample_rate = SAMPLE_RATES[i % len(SAMPLE_RATES)]
        ext, subtype = FORMATS[i % len(FORMATS)]
        audio, info = synthesize_track(rng, genre, instrument, mode, duration, sample_rate)
        if i % 3 == 0:  # some stereo files, with slightly different channels
            audio = np.stack([audio, 0.9 * audio], axis=1)
        track_id = f"track-{i:03d}"
        path = os.path.join(audio_dir, track_id + ext)
        _write_audio(path, audio, sample_rate, subtype)
        rows.append(
            {
                "path": os.path.relpath(path, out_dir),
                "track_id": track_id,
                "split": splits[i],
                "task": str(tasks[i]),
                "duration": round(duration, 3),
                **track_labels(genre, instrument, mode, info),
            }
        )
    with storage.open(os.path.join(out_dir, "metadata.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with storage.open(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "track_id", "split", "task", "label"])
        for row in rows:
            task = row["task"]
            writer.writerow([row["path"], row["track_id"], row["split"], task, row[task]])
    return rows
