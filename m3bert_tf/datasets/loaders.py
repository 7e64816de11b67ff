"""The loaders by name with the options each declares, the config of those
options, and the check every loaded dataset passes.

A loader is a row of `LOADERS`: its function and its `OPTIONS` (declared in
its module, `base.Option`). `DatasetOptions` is made from the table, one
field per option name, so each option is a field of `ExtractConfig` and a
flag of bin/extract with its help, with no second edit; `for_loader` picks
the keyword arguments of one loader.
"""

import dataclasses
from collections.abc import Callable

from m3bert_tf.datasets import ballroom, csv_manifest, deam, gtzan, jamendo, rwc
from m3bert_tf.datasets.base import LoadResult, Option, Problem


@dataclasses.dataclass(frozen=True)
class Loader:
    """One dataset layout: `load(root, **options) -> LoadResult` and its options."""

    load: Callable[..., LoadResult]
    options: tuple[Option, ...] = ()


LOADERS = {
    "gtzan": Loader(gtzan.load, gtzan.OPTIONS),
    "mtg_jamendo_moodtheme": Loader(jamendo.load, jamendo.OPTIONS),
    "extended_ballroom": Loader(ballroom.load, ballroom.OPTIONS),
    "deam": Loader(deam.load, deam.OPTIONS),
    "rwc_instrument": Loader(rwc.load, rwc.OPTIONS),
    "csv": Loader(csv_manifest.load, csv_manifest.OPTIONS),
}


def _options_by_name() -> dict[str, list[tuple[str, Option]]]:
    """{option name: [(loader, its Option)]}, checking that loaders sharing a
    name agree on its keyword and default (one field holds it)."""
    out: dict[str, list[tuple[str, Option]]] = {}
    for loader, row in LOADERS.items():
        for option in row.options:
            out.setdefault(option.name, []).append((loader, option))
    for name, users in out.items():
        if len({(o.keyword, o.default) for _, o in users}) > 1:
            raise TypeError(f"loaders {[u for u, _ in users]} disagree on option {name}")
    return out


def _help(users: list[tuple[str, Option]]) -> str:
    """One line of help: the loaders that read the option and what it is to each."""
    helps = {o.help for _, o in users}
    if len(helps) == 1:
        return f"{helps.pop()} ({', '.join(u for u, _ in users)})."
    return "; ".join(f"{u}: {o.help}" for u, o in users) + "."


def _for_loader(self, loader: str) -> dict:
    """{keyword: value} of the options `loader` declares."""
    return {o.keyword: getattr(self, o.name) for o in LOADERS[loader].options}


def options_class(name: str = "DatasetOptions"):
    """A frozen config dataclass with one field per option name of `LOADERS`
    (its default the option's), documented from the options' help, with
    `for_loader(loader)`."""
    by_name = _options_by_name()
    attributes = "".join(f"      {n}: {_help(users)}\n" for n, users in by_name.items())
    cls = dataclasses.make_dataclass(
        name,
        [
            (n, type(users[0][1].default), dataclasses.field(default=users[0][1].default))
            for n, users in by_name.items()
        ],
        frozen=True,
        namespace={"for_loader": _for_loader},
    )
    cls.__doc__ = (
        "The options of the dataset loaders (made from `LOADERS`); each loader\n"
        "    reads only its own (`for_loader`).\n\n    Attributes:\n" + attributes
    )
    cls.__module__ = __name__
    return cls


DatasetOptions = options_class()


def load(name: str, root: str, **options) -> LoadResult:
    """Runs the loader `name` (a key of LOADERS) on `root` with its options."""
    if name not in LOADERS:
        raise ValueError(f"dataset must be one of {sorted(LOADERS)}, got {name!r}")
    return refuse_conflicting_labels(LOADERS[name].load(root, **options))


def refuse_conflicting_labels(result: LoadResult) -> LoadResult:
    """The result without the files of a track id whose files disagree on a
    task's label (each such file becomes a Problem): a track is scored as
    one, with one label per task."""
    labels: dict[tuple, dict] = {}
    for t in result.tracks:
        for task, label in t.labels.items():
            labels.setdefault((t.track_id, task), {})[t.path] = label
    bad = {
        path: f"track {track_id!r} has {task} labels {sorted(set(map(str, by_path.values())))} "
        "across its files: a track has one label per task"
        for (track_id, task), by_path in labels.items()
        if len(set(map(str, by_path.values()))) > 1
        for path in by_path
    }
    if not bad:
        return result
    return LoadResult(
        [t for t in result.tracks if t.path not in bad],
        result.specs,
        result.problems + [Problem(path, reason) for path, reason in sorted(bad.items())],
    )
