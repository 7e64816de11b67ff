"""Windows over a long track and the stitching of their embeddings (numpy only).

A model sees at most a window of W frames; a track of T frames is covered by
windows starting every H frames (H = W: no overlap), the last one moved back
to end at the track's end. Each output frame is kept from the window in which
it is most central, so overlapping windows are stitched without seams and
every frame comes from exactly one window.

Units: `start`/`stop` are input frames (23.2 ms); `keep_start`/`keep_stop`
are output frames of the whole track (input frames / k, k = frame stack).
"""

import math
from typing import NamedTuple

import numpy as np

from m3bert_tf import schema

MAX_WINDOW_SECONDS = 30.0


class Window(NamedTuple):
    start: int  # first input frame of the window
    stop: int  # one past its last input frame
    keep_start: int  # output frames of the track this window provides
    keep_stop: int

    def kept(self, frame_stack: int = 1) -> slice:
        """The output frames this window keeps, as a slice of its own outputs."""
        first = self.start // frame_stack
        return slice(self.keep_start - first, self.keep_stop - first)


def check_seconds(window_seconds: float | None, hop_seconds: float | None) -> None:
    """The one check of a window and hop given in seconds (None or 0: the
    default): the window in (0, 30], the hop in (0, window].

    Raises:
      ValueError: naming the argument and its value.
    """
    for name, value in (("window_seconds", window_seconds), ("hop_seconds", hop_seconds)):
        if value is not None and not value >= 0:  # NaN too
            raise ValueError(f"{name} must be >= 0 (0 = the model's window), got {value}")
    window = window_seconds or MAX_WINDOW_SECONDS
    if window > MAX_WINDOW_SECONDS:
        raise ValueError(
            f"window_seconds={window_seconds}: at most {MAX_WINDOW_SECONDS:g} s"
        )
    if hop_seconds and hop_seconds > window:
        raise ValueError(
            f"hop_seconds={hop_seconds} must not exceed window_seconds={window:g}"
        )


def seconds_to_frames(seconds: float, frame_stack: int) -> int:
    """Seconds -> input frames, a positive multiple of the frame stack (rounded down)."""
    frames = int(seconds * schema.SAMPLE_RATE / schema.HOP_LENGTH)
    return max(frame_stack, frames // frame_stack * frame_stack)


def default_window_frames(training_frames: int, frame_stack: int) -> int:
    """The model's training crop, at most 30 s: positions a model never saw in
    training are not to be trusted (a 256-frame-trained tiny model scored far
    worse on whole 30 s clips), and docs/contract.md caps windows at 30 s."""
    cap = seconds_to_frames(MAX_WINDOW_SECONDS, frame_stack)
    return max(frame_stack, min(training_frames // frame_stack * frame_stack, cap))


def plan(num_frames: int, window: int, hop: int, frame_stack: int = 1) -> list[Window]:
    """The windows covering `num_frames` input frames, with the output frames each keeps.

    Args:
      window, hop: W and H in input frames, multiples of `frame_stack`, H <= W.
    """
    k = frame_stack
    if window % k or hop % k or not 0 < hop <= window:
        raise ValueError(
            f"window {window} and hop {hop} frames must be multiples of the frame "
            f"stack {k} with 0 < hop <= window"
        )
    if num_frames <= window:
        return [Window(0, num_frames, 0, math.ceil(num_frames / k))]
    last = (
        math.ceil((num_frames - window) / k) * k
    )  # the last window ends at the track's end
    starts = list(range(0, last, hop)) + [last]
    stops = [min(s + window, num_frames) for s in starts]
    out, keep_start = [], 0
    for i, (start, stop) in enumerate(zip(starts, stops, strict=False)):
        if i + 1 == len(starts):
            keep_stop = math.ceil(num_frames / k)
        else:
            # Output frame j (center j*k + k/2) stays with window i while it is
            # at least as close to i's center as to the next window's.
            middle = ((start + stop) / 2 + (starts[i + 1] + stops[i + 1]) / 2) / 2
            keep_stop = math.floor((middle - k / 2) / k) + 1
            keep_stop = min(max(keep_stop, starts[i + 1] // k), math.ceil(stop / k))
        out.append(Window(start, stop, keep_start, keep_stop))
        keep_start = keep_stop
    return out


def timestamps(num_output_frames: int, frame_stack: int = 1) -> np.ndarray:
    """[T'] float64 seconds: the center of each output frame's input frames
    (frame f of the centered STFT is centered at f * 1024 / 44100 s)."""
    k = frame_stack
    centers = np.arange(num_output_frames) * k + (k - 1) / 2
    return centers * schema.HOP_LENGTH / schema.SAMPLE_RATE
