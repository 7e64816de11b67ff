import numpy as np
import pytest
import soundfile
from conftest import music_like, write_audio

from m3bert_tf.features import audio


@pytest.mark.parametrize(
    "name,rate,channels,subtype",
    [
        ("int16.wav", 44100, 1, "PCM_16"),
        ("float.wav", 44100, 1, "FLOAT"),
        ("stereo.flac", 22050, 2, None),
        ("surround.wav", 48000, 6, "PCM_24"),
        ("vorbis.ogg", 32000, 1, None),
        ("mpeg.mp3", 48000, 2, None),
        ("sun.au", 16000, 1, "PCM_16"),
    ],
)
def test_load_audio_gives_mono_44k_float32(tmp_path, name, rate, channels, subtype):
    path = write_audio(str(tmp_path / name), 2.0, rate, channels, subtype=subtype)
    y = audio.load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    # mp3 encoders pad the start and end; everything else is sample-exact.
    tolerance = 0.1 if name.endswith(".mp3") else 0.001
    assert abs(len(y) / 44100 - 2.0) < tolerance
    assert 0.1 < np.max(np.abs(y)) <= 1.0


def test_resampling_keeps_the_pitch(tmp_path):
    rate = 22050
    t = np.arange(rate) / rate
    soundfile.write(str(tmp_path / "a440.wav"), 0.5 * np.sin(2 * np.pi * 440 * t), rate)
    y = audio.load_audio(str(tmp_path / "a440.wav"))
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 44100 / len(y) - 440) < 2


def test_stereo_is_averaged(tmp_path):
    left = music_like(1.0, seed=1)
    soundfile.write(str(tmp_path / "lr.wav"), np.stack([left, -left], 1), 44100, "FLOAT")
    assert np.max(np.abs(audio.load_audio(str(tmp_path / "lr.wav")))) < 1e-6


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty file"), (b"just some text\n" * 10, "not decodable")],
)
def test_bad_files_raise_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio.AudioError, match=rf"{path}.*{reason}"):
        audio.load_audio(str(path))


def test_silent_and_short_audio_are_rejected():
    with pytest.raises(audio.AudioError, match="x.wav: silent"):
        audio.check_usable("x.wav", np.zeros(44100 * 2, np.float32), 44100, 1.0)
    with pytest.raises(audio.AudioError, match="x.wav: too short"):
        audio.check_usable("x.wav", music_like(0.5), 44100, 1.0)
    audio.check_usable("x.wav", music_like(1.5), 44100, 1.0)
