"""A real full disk under the jobs that write the most (issue "Nothing lost
when the disk fills"): a 2-3 MB tmpfs mounted in a user namespace of its own
(`unshare`), so that the failing writes are the kernel's, short writes
included. Skipped, with the reason, where the machine forbids the mount."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_bin, user_env, write_audio

from m3bert_tf.data import shards
from m3bert_tf.features import streaming
from m3bert_tf.io import storage

ENV = user_env()


def _can_mount_tmpfs(tmp_path) -> str:
    """'' where `unshare` can mount a tmpfs here; else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    target = tmp_path / "probe"
    target.mkdir()
    result = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {target}"],
        capture_output=True, text=True,
    )  # fmt: skip
    return (
        "" if result.returncode == 0 else f"cannot mount a tmpfs: {result.stderr.strip()}"
    )


def on_small_disk(
    tmp_path, size: str, mount_at, script: str, keep, options: str = ""
) -> subprocess.CompletedProcess:
    """Runs `script` (sh) with a `size` tmpfs mounted at `mount_at` (with
    `options`, e.g. ",ro"), then copies the tmpfs' contents to `keep` (the
    mount ends with the namespace)."""
    why = _can_mount_tmpfs(tmp_path)
    if why:
        pytest.skip(why)
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c",
         f"mount -t tmpfs -o size={size}{options} tmpfs {mount_at} && {{ {script}; }}; "
         f"rc=$?; cp -a {mount_at}/. {keep}/; exit $rc"],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600,
    )  # fmt: skip


@pytest.fixture
def long_tracks(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    for i in range(6):
        write_audio(str(d / f"t{i}.wav"), 12.0, 44100, seed=i)
    return d


@pytest.mark.parametrize("size, workers", [("1500k", 2), ("2500k", 1)])
def test_a_full_disk_stops_extraction_and_a_rerun_completes(
    long_tracks, tmp_path, size, workers
):
    """The disk fills in the workers' first spilled features (1.5 MB), or
    after shards were written (2.5 MB): the job stops with one line naming the path, records
    no input file as failed, lists no track it did not write whole; the
    same command with space resumes to every track."""
    out, kept = tmp_path / "out", tmp_path / "kept"
    out.mkdir()
    kept.mkdir()
    argv = " ".join(run_bin(
        "extract", f"--input={long_tracks}", f"--output_dir={out}",
        f"--num_workers={workers}", "--shard_size=2", "--progress_interval=1000",
    ))  # fmt: skip
    result = on_small_disk(tmp_path, size, out, argv, kept)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last and str(out) in last, result.stderr
    assert "Traceback" not in result.stderr
    if workers == 1:
        assert list(kept.glob("shard-*" + shards.INDEX_SUFFIX)), "filled before a shard"
    failures = kept / "failures.jsonl"
    assert not failures.exists() or failures.read_text() == "", "an input file blamed"
    for index in kept.glob("*" + shards.INDEX_SUFFIX):  # what was listed is whole
        shard = str(index)[: -len(shards.INDEX_SUFFIX)] + shards.SHARD_SUFFIX
        info = json.loads(index.read_text())
        assert os.path.getsize(shard) == info["bytes"]
        assert storage.sha256(shard) == info["sha256"]

    rerun = subprocess.run(
        run_bin("extract", f"--input={long_tracks}", f"--output_dir={kept}",
                "--num_workers=2", "--shard_size=2", "--progress_interval=1000"),
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((kept / shards.MANIFEST_NAME).read_text())
    assert manifest["counts"]["failures"] == 0
    tracks = [
        t for s in manifest["shards"]
        for t in shards.read_index(str(kept / s["name"]))["tracks"]
    ]  # fmt: skip
    assert sorted(t["track_id"] for t in tracks) == [f"t{i}" for i in range(6)]
    assert all(t["track_frames"] == 1 + 12 * 44100 // 1024 for t in tracks)


def test_spilled_frames_on_a_full_disk_fail_naming_the_file(tmp_path):
    """`_FrameFile.append` on a tmpfs that fills mid-write: OutputError,
    never a short file counted as frames (the cause of cut tracks listed as
    whole: an unchecked short `os.pwrite`)."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    script = (
        "import numpy as np, sys; from m3bert_tf.features import streaming; "
        f"f = streaming._FrameFile(324, {str(disk)!r}, named=True)\n"
        "try:\n"
        "    for _ in range(100): f.append(np.ones((100, 324), np.float32))\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, f.num_frames, e); f.close(delete=False); sys.exit(3)\n"
    )
    path = tmp_path / "spill.py"
    path.write_text(script)
    result = on_small_disk(tmp_path, "300k", disk, f"{sys.executable} {path}", kept)
    if result.returncode != 3:
        pytest.fail(result.stdout + result.stderr)
    name, frames, message = result.stdout.split(" ", 2)
    assert name == "OutputError" and "No space left on device" in message
    (spilled,) = kept.glob(".features-*")
    assert os.path.getsize(spilled) // (324 * 4) >= int(frames)  # counted <= written
    with pytest.raises(OSError, match="not a whole number"):
        streaming._FrameFile(324, None, path=str(spilled))
    whole = streaming._FrameFile(324, str(tmp_path), named=True)
    whole.append(np.ones((3, 324), np.float32))
    assert whole.read(0, 3).shape == (3, 324)
    whole.close()


def test_a_full_disk_stops_embedding_and_keeps_no_cut_npz(exported, long_tracks, tmp_path):
    """bin/embed's features spill into its output directory: a full disk
    stops the job with one line, no .npz that is not whole is kept or listed,
    and a rerun with space embeds every track at its full length."""
    _, export_dir = exported["pretrained"]
    out, kept = tmp_path / "out", tmp_path / "kept"
    out.mkdir()
    kept.mkdir()
    argv = " ".join(run_bin(
        "embed", f"--model={export_dir}", f"--input={long_tracks}", f"--output_dir={out}",
        "--num_workers=2", "--model_in=main", "--progress_interval=1000",
    ))  # fmt: skip
    result = on_small_disk(tmp_path, "1200k", out, argv, kept)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last and str(out) in last, result.stderr
    assert "Traceback" not in result.stderr
    for npz in kept.glob("*.npz"):
        with np.load(npz) as data:
            assert float(data["duration_s"]) == pytest.approx(12.0, abs=0.01)
    rerun = subprocess.run(
        run_bin("embed", f"--model={export_dir}", f"--input={long_tracks}",
                f"--output_dir={kept}", "--num_workers=2", "--model_in=main"),
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    lengths = set()
    for i in range(6):
        with np.load(kept / f"t{i}.npz") as data:
            lengths.add(len(data["frame_embeddings"]))
    assert len(lengths) == 1  # every track whole: the same 12 s each


@pytest.mark.parametrize("binary", ["extract", "embed"])
def test_a_read_only_output_directory_is_one_line(exported, long_tracks, tmp_path, binary):
    """A read-only file system (root ignores file modes, so a real one): one
    line naming the path, exit 1, no traceback."""
    out, kept = tmp_path / "out", tmp_path / "kept"
    out.mkdir()
    kept.mkdir()
    model = [f"--model={exported['pretrained'][1]}"] if binary == "embed" else []
    argv = " ".join(
        run_bin(binary, *model, f"--input={long_tracks}", f"--output_dir={out}")
    )
    result = on_small_disk(tmp_path, "1m", out, argv, kept, options=",ro")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert str(out) in line and "Read-only file system" in line, result.stderr
