"""The progress line: its rate and ETA count from the first finished item."""

import io

from m3bert_tf.io import progress


def test_rate_and_eta_exclude_start_up(monkeypatch):
    clock = iter([0.0, 60.0, 61.0, 62.0])  # 60 s of start-up, then 1 s per item
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = progress.Progress("job", 10, "files", interval=0.0, stream=out)
    p.update(1)
    p.update(2)
    p.update(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "job: 1/10 files (10%) elapsed 1:00, ETA ?"
    assert lines[1] == "job: 2/10 files (20%) 1.00 files/s, elapsed 1:01, ETA 0:08"
    assert lines[2] == "job: 3/10 files (30%) 1.00 files/s, elapsed 1:02, ETA 0:07"
