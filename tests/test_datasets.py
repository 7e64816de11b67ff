"""Loaders: one tiny directory per publisher layout, with real synthesized audio."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import ROOT, run_bin, write_audio

from m3bert_tf import datasets, schema
from m3bert_tf.data import records, shards
from m3bert_tf.tasks import LabelError, TaskSpec, infer_spec


def audio(path, seconds=1.2, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_audio(str(path), seconds, 22050, seed=seed)


def assert_split_by_track(result):
    splits = {}
    for t in result.tracks:
        assert splits.setdefault(t.track_id, t.split) == t.split
        assert t.split in ("train", "valid", "test")


def test_gtzan_with_fault_filtered_lists(tmp_path):
    for genre in ("blues", "rock"):
        for i in range(3):
            audio(tmp_path / "genres" / genre / f"{genre}.0000{i}.wav", seed=i)
    audio(tmp_path / "genres" / "polka" / "polka.00000.wav")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train_filtered.txt").write_text(
        "blues/blues.00000.wav\nrock/rock.00000.wav\nrock/rock.00009.wav\n"
    )
    (lists / "valid_filtered.txt").write_text("blues/blues.00001.wav\n")
    (lists / "test_filtered.txt").write_text("rock/rock.00001.wav\n")
    result = datasets.load("gtzan", str(tmp_path / "genres"), split_dir=str(lists))
    got = {t.track_id: (t.split, t.labels["genre"]) for t in result.tracks}
    assert got == {
        "blues.00000": ("train", "blues"), "rock.00000": ("train", "rock"),
        "blues.00001": ("valid", "blues"), "rock.00001": ("test", "rock"),
    }  # fmt: skip
    assert any("polka: unknown genre" in p for p in map(str, result.problems))
    assert any(
        p.startswith(f"{lists / 'train_filtered.txt'}:3:")
        for p in map(str, result.problems)
    )
    assert result.specs["genre"].num_outputs == 10


def test_gtzan_without_lists_splits_stratified_and_warns(tmp_path):
    for genre in ("blues", "rock"):
        for i in range(5):
            audio(
                tmp_path / genre / f"{genre}.0000{i}.au"
                if i
                else tmp_path / genre / f"{genre}.0000{i}.wav",
                seed=i,
            )
    result = datasets.load("gtzan", str(tmp_path), seed=3)
    assert len(result.tracks) == 10
    assert any("seeded 60/20/20" in p for p in map(str, result.problems))
    for genre in ("blues", "rock"):
        splits = sorted(t.split for t in result.tracks if t.labels["genre"] == genre)
        assert splits == ["test", "train", "train", "train", "valid"]
    again = datasets.load("gtzan", str(tmp_path), seed=3)
    assert [t.split for t in again.tracks] == [t.split for t in result.tracks]


def test_mtg_jamendo_moodtheme_tsv(tmp_path):
    audio(tmp_path / "audio" / "48" / "948.mp3")
    audio(tmp_path / "audio" / "12" / "112.low.mp3")
    splits = tmp_path / "split-0"
    splits.mkdir()
    header = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    (splits / "autotagging_moodtheme-train.tsv").write_text(
        header
        + "track_0000948\tartist_1\talbum_1\t48/948.mp3\t212.7\tmood/theme---happy\tmood/theme---film\n"
        + "track_0000112\tartist_2\talbum_2\t12/112.mp3\t100.0\tmood/theme---sad\n"
        + "track_0000003\tartist_3\n"
        + "track_0000004\tartist_4\talbum_4\t48/948.mp3\t10.0\tmood/theme---grumpy\n"
        + "track_0000005\tartist_5\talbum_5\t99/5.mp3\t10.0\tmood/theme---calm\n"
    )
    (splits / "autotagging_moodtheme-validation.tsv").write_text(header)
    (splits / "autotagging_moodtheme-test.tsv").write_text(header)
    result = datasets.load(
        "mtg_jamendo_moodtheme", str(tmp_path / "audio"), split_dir=str(splits)
    )
    assert [(t.track_id, t.labels["moodtheme"]) for t in result.tracks] == [
        ("track_0000948", "happy|film"), ("track_0000112", "sad"),
    ]  # fmt: skip
    assert result.tracks[1].path.endswith("112.low.mp3")
    train = splits / "autotagging_moodtheme-train.tsv"
    assert any(p.startswith(f"{train}:4: malformed row") for p in map(str, result.problems))
    assert any(
        p.startswith(f"{train}:5: unknown tag 'grumpy'") for p in map(str, result.problems)
    )
    assert any(
        p.startswith(f"{train}:6: audio file missing") for p in map(str, result.problems)
    )
    spec = result.specs["moodtheme"]
    assert spec.kind == "multilabel" and spec.num_outputs == 56
    vector = spec.encode("happy|film")
    assert sum(vector) == 2 and vector[spec.classes.index("film")] == 1


def test_extended_ballroom(tmp_path):
    for dance in ("Jive", "Waltz"):
        for i in range(5):
            audio(tmp_path / dance / f"{100 + i}.mp3", seed=i)
    audio(tmp_path / "Polka" / "1.mp3")
    result = datasets.load("extended_ballroom", str(tmp_path))
    assert len(result.tracks) == 10 and result.specs["ballroom"].num_outputs == 13
    assert any("Polka: unknown dance" in p for p in map(str, result.problems))
    assert_split_by_track(result)


def test_deam_scales_ratings_to_minus_one_one(tmp_path):
    for song in (2, 3, 4):
        audio(tmp_path / "MEMD_audio" / f"{song}.mp3", seed=song)
    ann = tmp_path / "annotations" / "static_annotations_averaged_songs_1_2000.csv"
    ann.parent.mkdir()
    ann.write_text(
        "song_id, valence_mean, valence_std, arousal_mean, arousal_std\n"
        "2, 9.0, 0.9, 1.0, 0.5\n3, 5, 1, 7, 1\n4, x, 1, 3, 1\n5, 4, 1, 4, 1\n"
    )
    result = datasets.load("deam", str(tmp_path))
    got = {t.track_id: t.labels["emotion"] for t in result.tracks}
    assert got == {"deam/2": [1.0, -1.0], "deam/3": [0.0, 0.5]}
    assert any(p.startswith(f"{ann}:4: malformed row") for p in map(str, result.problems))
    assert any(
        p.startswith(f"{ann}:5: audio file missing") for p in map(str, result.problems)
    )
    assert result.specs["emotion"].outputs == ("valence", "arousal")


def test_rwc_instrument_from_file_names(tmp_path):
    for name in ("011PFNOM.WAV", "012PFNOF.WAV", "151VNNOM.WAV", "readme.WAV"):
        audio(tmp_path / "RWC" / name)
    result = datasets.load("rwc_instrument", str(tmp_path))
    assert sorted(t.labels["instrument"] for t in result.tracks) == ["01", "01", "15"]
    assert result.specs["instrument"].classes == ("01", "15")
    assert any("readme.WAV: name does not match" in p for p in map(str, result.problems))
    custom = datasets.load(
        "rwc_instrument", str(tmp_path), pattern=r"^\d{2}\d(?P<instrument>[A-Z]{2})"
    )
    assert sorted(t.labels["instrument"] for t in custom.tracks) == ["PF", "PF", "VN"]


def test_csv_manifest_infers_kinds_and_reports_bad_rows(tmp_path):
    for name in "abcd":
        audio(tmp_path / f"{name}.wav")
    (tmp_path / "m.csv").write_text(
        "path,track_id,split,task,label\n"
        "a.wav,A,train,style,rock\nb.wav,B,,style,jazz\n"
        "a.wav,A,train,tags,x|y\nc.wav,C,test,tags,y\n"
        "d.wav,D,valid,tempo,0.5\nc.wav,C,test,tempo,-0.25\n"
        ",E,train,style,rock\nmissing.wav,M,train,style,pop\nd.wav,D,valid,style,\n"
    )
    result = datasets.load("csv", str(tmp_path / "m.csv"))
    assert {t.track_id for t in result.tracks} == {"A", "B", "C", "D"}
    specs = result.specs
    assert specs["style"] == TaskSpec("style", "classification", classes=("jazz", "rock"))
    assert specs["tags"].kind == "multilabel" and specs["tempo"].kind == "regression"
    lines = [p.split(": ")[0] for p in map(str, result.problems)]
    assert lines == [f"{tmp_path / 'm.csv'}:{n}" for n in (8, 9, 10)]
    assert next(t for t in result.tracks if t.track_id == "B").split in (
        "train",
        "valid",
        "test",
    )


def test_task_spec_encoding_errors():
    spec = infer_spec("mood", ["calm", "sad"])
    with pytest.raises(LabelError, match="unknown label 'angry'"):
        spec.encode("angry")
    with pytest.raises(LabelError, match="needs 2"):
        TaskSpec("emotion", "regression", outputs=("v", "a")).encode("0.5")


def test_bin_extract_writes_labeled_shards_and_splits(tmp_path):
    for dance in ("Jive", "Waltz"):
        for i in range(5):
            audio(tmp_path / "ballroom" / dance / f"{i}.mp3", seconds=1.5, seed=i)
    out = tmp_path / "shards"
    res = subprocess.run(
        run_bin("extract", "--dataset=extended_ballroom", f"--dataset_root={tmp_path / 'ballroom'}",
                f"--output_dir={out}", "--num_workers=1"),
        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / shards.MANIFEST_NAME).read_text())
    assert manifest["tasks"]["ballroom"]["kind"] == "classification"
    assert sum(manifest["label_counts"]["ballroom"].values()) == 10
    splits = (out / shards.SPLITS_NAME).read_text().splitlines()
    assert splits[0] == "track_id,split,path" and len(splits) == 11
    import tensorflow as tf

    dances = manifest["tasks"]["ballroom"]["classes"]
    for serialized in tf.data.TFRecordDataset(str(out / manifest["shards"][0]["name"])):
        parsed = records.parse_example(serialized, {"ballroom": 1, "genre": 1})
        assert parsed["has/ballroom"].numpy() and not parsed["has/genre"].numpy()
        dance = parsed[schema.TRACK_ID_KEY].numpy().decode().split("/")[0]
        assert parsed["label/ballroom"].numpy().tolist() == [float(dances.index(dance))]
        assert parsed["label/genre"].numpy().tolist() == [0.0]


def test_the_example_corpus_notes_are_their_full_sum_of_partials():
    """The synthesizer skips partials of zero amplitude (the organ's upper, the
    square's even ones) for speed; a note must equal the plain sum over every
    partial up to float32 rounding, or the example corpus would change."""
    from m3bert_tf.demo import corpus

    for instrument in corpus.INSTRUMENTS:
        for f0, rate in ((110.0, 22050), (523.25, 48000)):
            got = corpus._tone(instrument, f0, 0.5, rate, brightness=0.7)
            k, amps = corpus._harmonics(instrument, f0, rate)
            amps = amps * 0.7 ** (k - 1)
            t = np.arange(len(got)) / rate
            wave = np.sin(2 * np.pi * f0 * t[:, None] * k[None, :])
            if instrument == "pluck":
                wave = wave * np.exp(-t[:, None] * (3.0 + 2.0 * k[None, :]))
            else:
                attack = np.minimum(t / (0.12 if instrument == "saw" else 0.01), 1.0)
                wave = (
                    wave * (attack * np.minimum((0.5 - t) / 0.03, 1.0).clip(0, 1))[:, None]
                )
                if instrument == "square":
                    wave = (
                        wave
                        * (1.0 - 0.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 7.0 * t)))[:, None]
                    )
            want = (wave @ amps) / np.sum(np.abs(amps))
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-7, err_msg=instrument)
            assert np.sum(amps != 0) < len(k) or instrument in ("saw", "pluck")
