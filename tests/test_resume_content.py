"""Resume keyed by content (issue "Nothing lost when the disk fills, nothing
resumed on trust", items 2, 3 and 9): a track is done only for the same
source bytes; what the readers refuse, bin/extract repairs."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import write_audio

from m3bert_tf import extract
from m3bert_tf.data import records, shards
from m3bert_tf.extract import resume
from m3bert_tf.io import storage


def run(input_path, out, **kwargs):
    lines = []
    manifest = extract.run_extract(
        extract.ExtractConfig(
            input=str(input_path), output_dir=str(out), num_workers=1, shard_size=2,
            progress_interval=1e9, **kwargs,
        ),
        log=lines.append,
    )  # fmt: skip
    return manifest, lines


def tracks_on_disk(out) -> dict:
    """{track id: (source path, [chunk features as float16 bytes])} read back
    through TensorFlow, after the readers' own checks of the directory."""
    shards.read_manifests(str(out))  # refuses duplicates, replaced or foreign shards
    found = {}
    for path in sorted(out.glob("*" + shards.SHARD_SUFFIX)):
        for example in records.read_examples(str(path)):
            entry = found.setdefault(example["track_id"], [example["source_path"], []])
            entry[1].append(np.asarray(example["features"]).tobytes())
    return found


@pytest.fixture
def audio(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    for i in range(5):
        write_audio(str(d / f"t{i}.wav"), 2.0 + 0.5 * i, 22050, seed=i)
    return d


def test_a_file_replaced_in_place_is_extracted_again_and_its_old_records_leave(
    audio, tmp_path
):
    """The shard that held the old file's records is rewritten without them:
    the directory ends as a fresh extraction of the new files would be."""
    out = tmp_path / "out"
    first, _ = run(audio, out)
    assert all(
        t["source_sha256"] == storage.sha256(t["source_path"])
        for s in first["shards"] for t in shards.read_index(str(out / s["name"]))["tracks"]
    )  # fmt: skip
    write_audio(str(audio / "t1.wav"), 3.0, 22050, seed=99)  # replaced in place
    second, lines = run(audio, out)
    assert any("t1.wav changed since it was extracted into shard-00000" in x for x in lines)
    assert second["run"]["files"] == 1 and second["counts"]["tracks"] == 5
    fresh, _ = run(audio, tmp_path / "fresh")
    assert tracks_on_disk(out) == tracks_on_disk(tmp_path / "fresh")
    assert second["normalization_stats"]["frames"] == fresh["normalization_stats"]["frames"]
    np.testing.assert_allclose(
        second["normalization_stats"]["mean"], fresh["normalization_stats"]["mean"],
        rtol=1e-9,
    )  # fmt: skip
    third, lines = run(audio, out)
    assert third["run"]["files"] == 0  # now unchanged: nothing redone


def test_another_file_under_a_done_id_is_refused_naming_both(audio, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "a.csv").write_text(f"path,track_id\n{audio}/t0.wav,song\n")
    run(tmp_path / "a.csv", out)
    (tmp_path / "b.csv").write_text(f"path,track_id\n{audio}/t1.wav,song\n")
    manifest, lines = run(tmp_path / "b.csv", out)
    (problem,) = [f for f in manifest["failures"] if f["path"].endswith("t1.wav")]
    assert "track id 'song' is already the id of" in problem["reason"]
    assert problem["reason"].count("t0.wav") == 1
    assert list(tracks_on_disk(out)) == ["song"]


def test_a_file_that_failed_is_tried_again_once_it_changed(audio, tmp_path):
    out = tmp_path / "out"
    (audio / "bad.wav").write_bytes(b"not audio at all")
    first, _ = run(audio, out)
    assert [f["path"] for f in first["failures"]] == [str(audio / "bad.wav")]
    again, _ = run(audio, out)  # unchanged: still a recorded failure, not retried
    assert again["run"]["files"] == 0 and again["counts"]["failures"] == 1
    write_audio(str(audio / "bad.wav"), 2.0, 22050, seed=7)
    fixed, lines = run(audio, out)
    assert any("bad.wav changed since it failed: trying it again" in x for x in lines)
    assert fixed["counts"]["failures"] == 0 and fixed["counts"]["tracks"] == 6
    assert "bad" in tracks_on_disk(out)


@pytest.mark.parametrize("damage", ["replaced", "no index", "killed mid-repair"])
def test_what_the_readers_refuse_bin_extract_repairs(audio, tmp_path, damage):
    out = tmp_path / "out"
    run(audio, out)
    fresh = tracks_on_disk(out)
    shard = out / "shard-00001.tfrecord"
    if damage == "replaced":  # same size, other bytes
        data = bytearray(shard.read_bytes())
        data[100] ^= 0xFF
        shard.write_bytes(bytes(data))
        with pytest.raises(shards.DataError, match="run bin/extract again"):
            shards.read_manifests(str(out))
    elif damage == "no index":
        os.remove(shards.index_path(str(shard)))
    else:  # the replacement shard written, the one it replaces not yet removed
        finished, number = shards.scan_output_dir(str(out))
        info = next(s for s in finished if s["shard"] == shard.name)
        shutil.copy(shard, tmp_path / "old")
        shutil.copy(shards.index_path(str(shard)), tmp_path / "old.index")
        resume.drop_tracks(str(out), finished, shard.name, set(), number)
        shutil.copy(tmp_path / "old", shard)
        shutil.copy(tmp_path / "old.index", shards.index_path(str(shard)))
        assert json.loads((out / "shard-00003.index.json").read_text())["replaces"] == (
            shard.name
        )
        assert info["tracks"]
    manifest, lines = run(audio, out)
    assert manifest["counts"]["tracks"] == 5
    assert tracks_on_disk(out) == fresh
    if damage != "killed mid-repair":
        assert any(f"{shard}: " in x and "set aside" in x for x in lines), lines
        assert (out / (shard.name + shards.SET_ASIDE_SUFFIX)).exists()
    else:
        assert not shard.exists()


def test_embed_redoes_a_replaced_file_and_refuses_reserved_or_long_ids(
    exported, audio, tmp_path
):
    from m3bert_tf.serving import embed_job, embed_outputs

    _, model = exported["pretrained"]
    rows = [f"{audio}/t{i}.wav,t{i}" for i in range(3)]
    rows += [f"{audio}/t3.wav,.tmp/kept", f"{audio}/t4.wav,{'x' * 300}"]
    (tmp_path / "in.csv").write_text("path,track_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "emb"

    def embed():
        return embed_job.run_embed(embed_job.EmbedConfig(
            model=model, input=str(tmp_path / "in.csv"), output_dir=str(out),
            num_workers=0, progress_interval=1e9,
        ))  # fmt: skip

    first = embed()
    reasons = {os.path.basename(f["path"]): f["reason"] for f in first["failed"]}
    assert "would be written into .tmp/" in reasons["t3.wav"]
    assert "a file name of 304 bytes, over the 255" in reasons["t4.wav"]
    assert first["embedded"] == 3 and not (out / ".tmp").exists()
    with np.load(out / "t1.npz") as data:
        assert str(data["source_sha256"]) == storage.sha256(str(audio / "t1.wav"))
        before = len(data["frame_embeddings"])
    write_audio(str(audio / "t1.wav"), 6.0, 22050, seed=42)  # replaced in place
    again = embed()
    assert again["embedded"] == 1 and again["skipped"] == 2
    with np.load(out / "t1.npz") as data:
        assert len(data["frame_embeddings"]) > before
        assert float(data["duration_s"]) == pytest.approx(6.0, abs=0.01)
    index = (out / embed_outputs.INDEX_NAME).read_text().splitlines()
    assert len(index) == 4 and not any(".tmp" in line for line in index)
