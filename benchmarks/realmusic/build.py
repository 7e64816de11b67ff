#!/usr/bin/env python3
"""Builds the real-music benchmark from Debian's game-soundtrack packages.

    .venv/bin/python benchmarks/realmusic/build.py --output_dir=work/realmusic \
        [--cache_dir=~/.cache/m3bert_tf/realmusic] [--packages=...]

Nothing of it is in git: every file comes from Debian packages fetched with
`apt-get download` (never installed), unpacked with `dpkg-deb -x`, each
package's copyright file kept beside the clips. Steps, each cached under
`--cache_dir` and keyed by content (a .deb is checked against the SHA-256
that `apt-cache show` gives; an unpacked tree is reused only for the same
.deb digest):

1. the music of each package: audio files (ogg, mp3, wav, flac; also inside
   Quake-style .pk3 zip archives) of at least `--min_track_seconds`, so
   sound effects are left out; stems of one song (Frets on Fire's guitar,
   rhythm, drums) are left out beside its mix; identical files once;
2. every track cut into consecutive 30 s mono clips (the remainder split
   between both ends), written as FLAC at the source's rate
   (`<output_dir>/clips/<package>/`);
3. a labeled task, "soundtrack" (which package a clip is from), over the
   packages with at least `--min_tracks` tracks: up to
   `--labeled_tracks_per_package` of each package's tracks, split 60/20/20
   by track (never a track on two sides; the order fixed by content
   digests), up to `--clips_per_track` evenly spaced clips of each, in
   `labeled.csv` (bin/extract's CSV manifest);
4. every clip of every track that is not in the labeled task's valid or
   test split in `pool.csv`: the pretraining pool (labels unused; no audio
   a probe is validated or tested on);
5. `benchmark.json` (packages with version and .deb digest, tracks, clips,
   hours, the split counts) and `copyright/<package>` files.

The same packages and settings give the same files, byte for byte.
`run.sh` beside this file extracts, pretrains, fine-tunes and evaluates on it.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

# The list (game soundtracks in Debian's main archive). Other real
# music is kept out on purpose: it is the independent held-out check.
PACKAGES = (
    "drascula-music berusky2-data colobot-common-sounds singularity-music blobwars-data "
    "marsshooter-data freedroidrpg-data flare-game megaglest-data openclonk-data "
    "hyperrogue-music pushover-data zaz-data frozen-bubble-data xmoto-data asc-music "
    "extremetuxracer-data planetblupi-music-ogg openarena-088-data "
    "fretsonfire-songs-muldjord fretsonfire-songs-sectoid"
).split()
AUDIO = (".ogg", ".mp3", ".wav", ".flac")
STEMS = {"guitar", "rhythm", "drums", "bass", "vocals", "preview", "crowd"}
CLIP_SECONDS = 30.0
SPLITS = (("train", 0.6), ("valid", 0.2), ("test", 0.2))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def debian_record(package: str) -> dict:
    """{"Version", "SHA256", "Filename"} of the candidate version (`apt-cache show`)."""
    text = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    fields = dict(
        line.split(": ", 1) for line in text.splitlines() if ": " in line and line[0] != " "
    )
    if "SHA256" not in fields:
        raise SystemExit(
            f"{package}: apt-cache knows no such package (run `apt-get update` first)"
        )
    return fields


def fetch(package: str, debs: str, log) -> tuple[str, dict]:
    """(the .deb's path, its apt record): downloaded unless a file of the
    right digest is in the cache."""
    record = debian_record(package)
    name = os.path.basename(record["Filename"])
    path = os.path.join(debs, name)
    if not (os.path.exists(path) and sha256_file(path) == record["SHA256"]):
        log(f"{package}: apt-get download ({int(record.get('Size', 0)) / 1e6:.0f} MB)")
        os.makedirs(debs, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", package], cwd=debs, check=True,
                       capture_output=True)  # fmt: skip
        if sha256_file(path) != record["SHA256"]:
            raise SystemExit(f"{path}: its SHA-256 is not the one apt-cache gives")
    return path, record


def unpack(deb: str, digest: str, trees: str, package: str) -> str:
    """The unpacked tree of a .deb (reused only for the same digest)."""
    tree = os.path.join(trees, package)
    stamp = os.path.join(tree, ".deb-sha256")
    if os.path.exists(stamp) and open(stamp).read() == digest:
        return tree
    subprocess.run(["rm", "-rf", tree], check=True)
    os.makedirs(tree)
    subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
    with open(stamp, "w") as f:
        f.write(digest)
    return tree


def audio_sources(tree: str):
    """(name inside the package, () -> bytes) of every audio file, sorted,
    those inside .pk3 (zip) archives included."""
    found = []
    for directory, _, names in os.walk(tree):
        for name in names:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, tree)
            if name.lower().endswith(AUDIO):
                found.append((rel, lambda p=path: open(p, "rb").read()))
            elif name.lower().endswith(".pk3") and zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        if member.lower().endswith(AUDIO):
                            found.append((
                                f"{rel}/{member}",
                                lambda p=path, m=member: zipfile.ZipFile(p).read(m),
                            ))  # fmt: skip
    return sorted(found, key=lambda item: item[0])


def music_tracks(package: str, tree: str, min_seconds: float, seen: set, log) -> list[dict]:
    """The package's music: audio of at least `min_seconds`, stems and
    files already taken (by content) left out."""
    import soundfile

    tracks = []
    for name, read in audio_sources(tree):
        stem = os.path.splitext(os.path.basename(name))[0].lower()
        if stem in STEMS:
            continue
        data = read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        try:
            info = soundfile.info(io.BytesIO(data))
        except (RuntimeError, soundfile.LibsndfileError) as e:
            log(f"{package}: {name} cannot be decoded ({e}); skipped")
            continue
        if info.duration < min_seconds:
            continue
        seen.add(digest)
        tracks.append(
            {"name": name, "digest": digest, "seconds": info.duration, "read": read}
        )
    return tracks


def write_clips(package: str, track: dict, clips_dir: str) -> list[str]:
    """The track's consecutive 30 s mono clips as FLAC (silent ones left
    out); their paths relative to the output directory."""
    import numpy as np
    import soundfile

    audio, rate = soundfile.read(
        io.BytesIO(track["read"]()), dtype="float32", always_2d=True
    )
    mono = audio.mean(1)
    length = int(CLIP_SECONDS * rate)
    count = max(1, len(mono) // length)
    spare = len(mono) - count * length
    out = []
    for k in range(count):
        start = spare // 2 + k * length
        clip = mono[start : start + length]
        if np.max(np.abs(clip)) < 1e-4:  # a silent stretch is no music
            continue
        rel = os.path.join("clips", package, f"{track['digest'][:16]}-{k}.flac")
        path = os.path.join(clips_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = path + ".partial.flac"
        soundfile.write(partial, clip, rate, subtype="PCM_16")
        os.replace(partial, path)
        out.append(rel)
    return out


def evenly(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spaced, first and last included."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def split_tracks(tracks: list[dict]) -> dict:
    """{track digest: split}: 60/20/20 of the tracks in digest order (each
    split gets at least one where there are three tracks)."""
    ordered = sorted(t["digest"] for t in tracks)
    n = len(ordered)
    if not n:
        return {}
    valid = max(1, round(n * SPLITS[1][1]))
    test = max(1, round(n * SPLITS[2][1]))
    out = {}
    for i, digest in enumerate(ordered):
        out[digest] = "test" if i < test else "valid" if i < test + valid else "train"
    return out


def from_debian(cache_dir: str, log):
    """package -> (its unpacked tree, its apt record), through the cache."""
    cache = os.path.expanduser(cache_dir)

    def prepare(package):
        deb, record = fetch(package, os.path.join(cache, "debs"), log)
        return unpack(
            deb, record["SHA256"], os.path.join(cache, "unpacked"), package
        ), record

    return prepare


def build(args, log=print, prepare=None) -> dict:
    """Writes the benchmark (module docstring); returns benchmark.json's content.

    Args:
      prepare: package -> (unpacked tree, {"Version", "SHA256"}); default:
        Debian's archive through the cache (`from_debian`).
    """
    prepare = prepare or from_debian(args.cache_dir, log)
    out_dir = args.output_dir
    os.makedirs(os.path.join(out_dir, "copyright"), exist_ok=True)
    seen, summary, labeled_rows, pool_rows = set(), {"packages": {}}, [], []
    for package in args.packages:
        tree, record = prepare(package)
        copyright_file = os.path.join(tree, "usr", "share", "doc", package, "copyright")
        if os.path.exists(copyright_file):
            with (
                open(copyright_file, "rb") as f,
                open(os.path.join(out_dir, "copyright", package), "wb") as g,
            ):
                g.write(f.read())
        tracks = music_tracks(package, tree, args.min_track_seconds, seen, log)
        labeled = len(tracks) >= args.min_tracks
        chosen = set()
        if labeled:  # the same tracks on every build: by digest
            chosen = set(
                sorted(t["digest"] for t in tracks)[: args.labeled_tracks_per_package]
            )
        split_of = split_tracks([t for t in tracks if t["digest"] in chosen])
        counts = {"train": 0, "valid": 0, "test": 0, "pool": 0}
        clips = 0
        for track in tracks:
            paths = write_clips(package, track, out_dir)
            clips += len(paths)
            track_id = f"{package}/{track['digest'][:16]}"
            split = split_of.get(track["digest"], "")
            if split:
                counts[split] += 1
                labeled_rows += [
                    (p, track_id, split, "soundtrack", package)
                    for p in evenly(paths, args.clips_per_track)
                ]  # fmt: skip
            if split not in ("valid", "test"):
                counts["pool"] += 1
                pool_rows += [(p, track_id) for p in paths]
        summary["packages"][package] = {
            "version": record["Version"], "deb_sha256": record["SHA256"],
            "music_tracks": len(tracks), "clips": clips, "labeled": labeled,
            "hours": round(sum(t["seconds"] for t in tracks) / 3600, 2), **counts,
        }  # fmt: skip
        log(f"{package}: {len(tracks)} music tracks, {clips} clips"
            + (" (labeled)" if labeled else ""))  # fmt: skip
    import csv

    for name, header, rows in (
        ("labeled.csv", ("path", "track_id", "split", "task", "label"), labeled_rows),
        ("pool.csv", ("path", "track_id"), pool_rows),
    ):
        with open(os.path.join(out_dir, name), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    summary |= {
        "settings": {k: v for k, v in vars(args).items() if k not in ("output_dir", "cache_dir")},
        "labeled_clips": len(labeled_rows), "pool_clips": len(pool_rows),
        "pool_hours": round(len(pool_rows) * CLIP_SECONDS / 3600, 2),
        "classes": sorted({r[4] for r in labeled_rows}),
    }  # fmt: skip
    with open(os.path.join(out_dir, "benchmark.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--cache_dir", default="~/.cache/m3bert_tf/realmusic")
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--min_track_seconds", type=float, default=30.0)
    parser.add_argument("--clips_per_track", type=int, default=2)
    parser.add_argument("--min_tracks", type=int, default=8)
    parser.add_argument("--labeled_tracks_per_package", type=int, default=16)
    args = parser.parse_args(argv)
    args.packages = [p for p in args.packages.split(",") if p]
    return args


if __name__ == "__main__":
    result = build(parse_args())
    print(
        f"{len(result['classes'])} soundtrack classes, {result['labeled_clips']} labeled "
        f"clips, a pool of {result['pool_clips']} clips ({result['pool_hours']} h); "
        f"{sys.argv[sys.argv.index('--output_dir') + 1] if '--output_dir' in sys.argv else ''}"
        "benchmark.json has the counts"
    )
