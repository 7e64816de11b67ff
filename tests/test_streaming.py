"""Block-wise features (`features.streaming`) against the whole-track extractor."""

import numpy as np
import pytest
import soundfile
from conftest import music_like

from m3bert_tf import schema
from m3bert_tf.features import audio, frames, samples, streaming


@pytest.fixture(scope="module")
def extractor():
    return frames.FeatureExtractor()


def long_file(path, seconds, rate=22050):
    """Music-like stereo audio with 5 s of digital silence at the start (so the
    MFCC's floor, 80 dB under the track's loudest value, is in play) and a
    -80 dB passage in the middle."""
    y = music_like(seconds, rate, seed=7).astype(np.float64)
    y[: 5 * rate] = 0.0
    y[int(70 * rate) : int(72 * rate)] *= 1e-4
    soundfile.write(path, np.stack([y, 0.5 * y], axis=1).astype(np.float32), rate)
    return path


@pytest.mark.parametrize("block_samples", [100_000, 132_300, 10**7])
def test_decoded_pieces_are_the_whole_file_resampled(tmp_path, block_samples):
    """A resampling stream over pieces (long files) and one call (a file that
    fits one piece) give the samples `audio.load_audio` gives."""
    path = str(tmp_path / "a.wav")
    soundfile.write(path, music_like(20.0, 48000, seed=3), 48000, subtype="FLOAT")
    pieces = list(samples.file_samples(path, block_samples=block_samples))
    assert len(pieces) == (1 if block_samples > 882_000 else -(-882_000 // block_samples))
    np.testing.assert_array_equal(np.concatenate(pieces), audio.load_audio(path))


def test_one_block_track_is_exact(tmp_path, extractor):
    path = long_file(str(tmp_path / "short.wav"), 30.0)
    whole = extractor(audio.load_audio(path))
    with streaming.spill_file(path, extractor) as track:
        assert track.num_frames == len(whole)
        np.testing.assert_array_equal(track.raw(0, track.num_frames), whole)
        normalized, mean, std = frames.cmvn_with_stats(whole)
        np.testing.assert_allclose(
            track.normalized(0, track.num_frames), normalized, atol=1e-5
        )
        np.testing.assert_allclose(track.mean, mean, rtol=1e-6, atol=1e-6)


def test_many_blocks_equal_the_whole_track(tmp_path, extractor):
    """150 s = 3+ blocks: equal up to float noise, which only the -80 dB passage shows."""
    path = long_file(str(tmp_path / "long.wav"), 150.0)
    whole = extractor(audio.load_audio(path))
    with streaming.spill_file(path, extractor) as track:
        raw = track.raw(0, track.num_frames)
        assert raw.shape == whole.shape
        diff = np.abs(raw - whole)
        quiet = slice(
            int(69.5 * schema.FRAMES_PER_SECOND), int(72.5 * schema.FRAMES_PER_SECOND)
        )
        loud = np.ones(len(diff), bool)
        loud[quiet] = False
        assert diff[loud].max() < 0.05, diff[loud].max()  # log(1e-6 + ...) near its floor
        assert np.mean(diff) < 1e-4
        # The MFCC floor is the track's, not a block's: silence is floored alike.
        mfcc = schema.BLOCK["mfcc"]
        np.testing.assert_allclose(
            raw[:100, mfcc.start : mfcc.stop],
            whole[:100, mfcc.start : mfcc.stop],
            atol=1e-3,
        )
        _, mean, std = frames.cmvn_with_stats(whole)
        np.testing.assert_allclose(track.mean, mean, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(track.std, std, rtol=1e-3, atol=1e-3)


def test_waveform_source_equals_file_source(tmp_path, extractor):
    y = music_like(60.0, 32000, seed=3)
    soundfile.write(str(tmp_path / "a.wav"), y, 32000, subtype="FLOAT")
    with (
        streaming.spill_file(str(tmp_path / "a.wav"), extractor) as a,
        streaming.spill_waveform(y, 32000, extractor) as b,
    ):
        np.testing.assert_array_equal(a.raw(0, a.num_frames), b.raw(0, b.num_frames))


def test_detached_track_moves_to_another_owner(tmp_path, extractor):
    y = music_like(3.0, 44100, seed=1)
    track = streaming.spill(
        samples.waveform_samples(y, 44100),
        extractor,
        "x",
        directory=str(tmp_path),
        named=True,
    )
    before = track.raw(0, track.num_frames)
    again = streaming.SpilledTrack.attach(track.detach())
    np.testing.assert_array_equal(again.raw(0, again.num_frames), before)
    again.close()
    assert not list(tmp_path.iterdir())  # the temporary file is gone


@pytest.mark.parametrize(
    "waveform, kwargs, message",
    [
        (np.zeros(44100 * 2, np.float32), {"reject_silent": True}, "silent"),
        (np.full(44100, np.nan, np.float32), {}, "NaN"),
        (np.ones(2000, np.float32) * 0.1, {}, "under 9 frames"),
        (np.ones(44100, np.float32) * 0.1, {"min_duration": 2.0}, "too short"),
    ],
)
def test_unusable_audio_is_named(waveform, kwargs, message, extractor):
    with pytest.raises(audio.AudioError, match=message) as e:
        streaming.spill(
            samples.waveform_samples(waveform, 44100), extractor, "clip.wav", **kwargs
        )
    assert str(e.value).startswith("clip.wav: ")
