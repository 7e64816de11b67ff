"""`storage`: one way to every file, local paths and URLs alike."""

import os
import re

import pytest
from conftest import ROOT

from m3bert_tf.io import storage

# Where a plain open() stays, and why: none of them is a path a user gives.
ALLOWED_OPEN = {
    "m3bert_tf/io/storage.py": "the one place plain paths are opened",
    "m3bert_tf/features/streaming.py": "spilled features: temporary files it created",
    "m3bert_tf/train/distribute.py": "/proc/cpuinfo",
    "m3bert_tf/runs/example_cache.py": "a memory-mapped cache, always on this machine's disk",
    "m3bert_tf/serving/embed_outputs.py": "raw outputs in a temporary directory",
    "m3bert_tf/features/kernels.py": "numba's kernel cache: a local directory of ours (lock, stamp)",
    "m3bert_tf/features/banks.py": "its own source, hashed into the filter bank cache's key",
}


def test_no_plain_open_on_a_users_path():
    found = []
    for top in ("m3bert_tf", "bin"):
        for directory, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, ROOT)
                if not (name.endswith(".py") or top == "bin") or rel in ALLOWED_OPEN:
                    continue
                with open(path) as f:
                    for number, line in enumerate(f, start=1):
                        if re.search(r"(?<![\w.])open\(", line):
                            found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "use storage.open (tf.io.gfile for URLs):\n" + "\n".join(found)


@pytest.mark.parametrize("as_url", [False, True])
def test_local_paths_and_file_urls_behave_alike(tmp_path, as_url):
    base = f"file://{tmp_path}" if as_url else str(tmp_path)
    target = os.path.join(base, "sub", "a.json")
    storage.makedirs(os.path.join(base, "sub"))
    storage.write_atomic(target, '{"x": 1}')
    storage.write_atomic(os.path.join(base, "sub", "b.bin"), b"\x00\x01")
    assert storage.exists(target) and storage.isfile(target)
    assert storage.isdir(os.path.join(base, "sub"))
    with storage.open(target) as f:
        text = f.read()
    assert text == '{"x": 1}' and storage.size(target) == 8
    assert [os.path.basename(p) for p in storage.glob(os.path.join(base, "sub", "*"))] == [
        "a.json", "b.bin"
    ]  # fmt: skip
    assert not storage.glob(os.path.join(base, "sub", "*" + ".m3bert-tmp"))
    with storage.open(os.path.join(base, "sub", "b.bin"), "rb") as f:
        f.seek(1)
        assert f.read() == b"\x01"
    storage.replace(target, os.path.join(base, "c.json"))
    assert not storage.exists(target) and storage.exists(os.path.join(base, "c.json"))
    walked = {os.path.basename(d.rstrip("/")): files for d, _, files in storage.walk(base)}
    assert sorted(walked[os.path.basename(str(tmp_path))]) == ["c.json"]
    with pytest.raises(FileNotFoundError):
        storage.size(os.path.join(base, "missing"))
    storage.rmtree(os.path.join(base, "sub"))
    assert not storage.exists(os.path.join(base, "sub"))


def test_relative_paths_resolve_inside_urls():
    assert storage.join_normalized("gs://b/data", "../audio/x.wav") == "gs://b/audio/x.wav"
    assert storage.join_normalized("file:///d/m", "a/./b.wav") == "file:///d/m/a/b.wav"
    assert storage.join_normalized("/d/m", "a/../b.wav") == "/d/m/b.wav"
    assert (
        storage.local_path("file:///d/x") == "/d/x"
        and storage.local_path("gs://b/x") is None
    )


def test_an_s3_url_works_on_the_tfio_line_and_names_it_elsewhere():
    """tensorflow-io's s3:// file system where its line is installed; on the
    default line (TensorFlow 2.21, no tensorflow-io) one line naming the extra,
    at once, before any network."""
    import tensorflow as tf

    from m3bert_tf.io import storage

    if tf.__version__.startswith("2.17."):  # the [tfio] line
        storage.gfile("s3://bucket/shards/manifest.json")
        assert "s3" in tf.io.gfile.get_registered_schemes()
        return
    with pytest.raises(OSError) as e:
        storage.exists("s3://bucket/shards/manifest.json")
    message = str(e.value)
    assert "\n" not in message and "s3://bucket/shards/manifest.json" in message
    assert "pip install 'm3bert_tf[tfio]'" in message and tf.__version__ in message
