"""benchmarks/realmusic/build.py on a tiny fake package tree (no download):
music kept, sound effects and stems left out, one copy of a file two
packages ship, splits by track, a pool without validation or test audio,
copyright files kept, and the same bytes on a second build."""

import csv
import importlib.util
import os
import shutil
import zipfile

import numpy as np
import soundfile
from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "realmusic_build", os.path.join(ROOT, "benchmarks", "realmusic", "build.py")
)
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

RATE = 8000


def _music(path, seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    y = 0.3 * np.sin(2 * np.pi * (110 + 20 * seed) * t) + 0.05 * rng.normal(size=len(t))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, y.astype(np.float32), RATE)


def _tree(root):
    """alpha: 6 tracks (one inside a .pk3), a sound effect and a stem; beta: 3
    tracks, one of them alpha's file again; gamma: one track."""
    trees = {}
    for package, tracks in (("alpha", 6), ("beta", 3), ("gamma", 1)):
        tree = root / package
        music = tree / "usr" / "share" / "games" / package / "music"
        for i in range(tracks):
            seconds = 31 + 17 * i  # one to three clips
            name = f"song{i}.ogg" if i % 2 else f"song{i}.wav"
            _music(str(music / name), seconds, seed=hash(package) % 100 + i)
        doc = tree / "usr" / "share" / "doc" / package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(f"{package}: free music\n")
        trees[package] = tree
    alpha = trees["alpha"] / "usr" / "share" / "games" / "alpha"
    os.replace(alpha / "music" / "song5.ogg", alpha / "song5.ogg")
    with zipfile.ZipFile(alpha / "pak0.pk3", "w") as archive:  # a track inside an archive
        archive.write(alpha / "song5.ogg", "music/song5.ogg")
    os.remove(alpha / "song5.ogg")
    _music(str(alpha / "sfx" / "boom.wav"), 2.0, seed=50)  # a sound effect
    _music(str(alpha / "songs" / "x" / "guitar.ogg"), 40.0, seed=51)  # a stem
    shutil.copy(alpha / "music" / "song0.wav", trees["beta"] / "usr" / "share" / "games" /
                "beta" / "music" / "copy.wav")  # fmt: skip
    return trees


def _run(root, trees, name):
    args = build.parse_args([
        f"--output_dir={root / name}", "--packages=alpha,beta,gamma", "--min_tracks=3",
        "--clips_per_track=1",
    ])  # fmt: skip
    records = {p: {"Version": "1.0", "SHA256": p * 4} for p in trees}
    return build.build(
        args, log=lambda m: None, prepare=lambda p: (str(trees[p]), records[p])
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_benchmark_builder_on_a_fake_package_tree(tmp_path):
    trees = _tree(tmp_path / "debs")
    summary = _run(tmp_path, trees, "one")
    packages = summary["packages"]
    # Music only: alpha's 6 tracks (the .pk3 one included), no effect, no stem;
    # beta's copy of alpha's file counted once, under alpha.
    assert packages["alpha"]["music_tracks"] == 6
    assert packages["beta"]["music_tracks"] == 3
    assert packages["gamma"]["music_tracks"] == 1 and not packages["gamma"]["labeled"]
    assert summary["classes"] == ["alpha", "beta"]
    labeled = _rows(tmp_path / "one" / "labeled.csv")
    pool = _rows(tmp_path / "one" / "pool.csv")
    split_of = {}
    for row in labeled:
        assert split_of.setdefault(row["track_id"], row["split"]) == row["split"]
        assert (
            row["track_id"].startswith(row["label"] + "/") and row["task"] == "soundtrack"
        )
    for package in ("alpha", "beta"):  # every split holds each class
        assert {s for t, s in split_of.items() if t.startswith(package)} == {
            "train",
            "valid",
            "test",
        }
    # One clip per labeled track; the pool has every clip of the other tracks
    # and of the training tracks, none of a validation or test track.
    assert len(labeled) == len(split_of) == 9
    pooled = {r["track_id"] for r in pool}
    assert not pooled & {t for t, s in split_of.items() if s != "train"}
    assert {t for t, s in split_of.items() if s == "train"} <= pooled
    assert any(t.startswith("gamma/") for t in pooled)
    assert len(pool) > len(pooled)  # tracks of 48-116 s give two or three clips
    for row in labeled + pool:
        info = soundfile.info(str(tmp_path / "one" / row["path"]))
        assert info.channels == 1 and abs(info.duration - 30.0) < 1e-3
    assert (tmp_path / "one" / "copyright" / "beta").read_text() == "beta: free music\n"
    # The same packages give the same benchmark, byte for byte.
    _run(tmp_path, trees, "two")
    for name in ("labeled.csv", "pool.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (
            tmp_path / "two" / name
        ).read_bytes()
    first = labeled[0]["path"]
    assert (tmp_path / "one" / first).read_bytes() == (
        tmp_path / "two" / first
    ).read_bytes()
