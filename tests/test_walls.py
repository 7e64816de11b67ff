"""The walls between rooms: every import (lazy ones inside functions too)
goes from a room to a room below it, never up, never in a circle; and each
room imports with every room above it blocked. Also the libraries a room
must not touch (no TensorFlow in features/ and datasets/, no Keras in data/
and frontend/, never train/ from serving/ or evaluate/)."""

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT, user_env

PACKAGE = os.path.join(ROOT, "m3bert_tf")
# Lowest first; a room may import rooms of a lower level only. A new module
# at the package root, or a new room, gets its level here.
LEVELS = [
    ("schema", "version", "fields"),
    ("io",),
    ("features", "tasks", "layers"),
    ("datasets", "models", "data"),
    ("frontend", "runs"),
    ("extract", "train"),
    ("serving",),
    ("evaluate", "hear"),
    ("demo",),
    ("cli", "__init__"),
]
LEVEL = {room: level for level, rooms in enumerate(LEVELS) for room in rooms}
NEVER = {  # room: libraries (top-level names) it must not import, even lazily
    "features": {"tensorflow", "keras"},
    "datasets": {"tensorflow", "keras"},
    "data": {"keras"},
    "frontend": {"keras", "librosa"},
    "layers": {"m3bert_tf.io.storage"},
    "models": {"m3bert_tf.io.storage"},
    # what uses a trained model reads it through runs/, never through training code
    "serving": {"m3bert_tf.train"},
    "evaluate": {"m3bert_tf.train"},
    "hear": {"m3bert_tf.train"},
}


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "m3bert_tf":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def modules():
    """(dotted name, path) of every module of the package."""
    for directory, _, names in os.walk(PACKAGE):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield dotted.removesuffix(".__init__"), path


def imports(path: str) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("m3bert_tf"):  # a name, or a module of a package
                out |= {f"{node.module}.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def test_every_room_has_a_level():
    rooms = {room_of(dotted) for dotted, _ in modules()}
    assert rooms <= set(LEVEL), f"rooms without a level in LEVELS: {rooms - set(LEVEL)}"


def wrong_imports(dotted: str, path: str) -> list[str]:
    """The imports of module `dotted` (its source at `path`) that go up a
    level or reach a library its room must never import."""
    wrong, room = [], room_of(dotted)
    for target in sorted(imports(path)):
        other = room_of(target)
        if other is not None and other != room and LEVEL[other] >= LEVEL[room]:
            wrong.append(f"{dotted} -> {target} ({room} may not import {other})")
        for banned in NEVER.get(room, ()):
            if target == banned or target.startswith(banned + "."):
                wrong.append(f"{dotted} -> {target} (never in {room}/)")
    return wrong


def test_imports_only_go_down_and_libraries_stay_out():
    wrong = [w for dotted, path in modules() for w in wrong_imports(dotted, path)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "dotted, line",
    [
        ("m3bert_tf.serving.planted", "from m3bert_tf.train import loop"),
        ("m3bert_tf.evaluate.planted", "import m3bert_tf.train.configs"),
        ("m3bert_tf.hear", "from m3bert_tf.train.configs import ModelConfig"),
        ("m3bert_tf.runs.planted", "from m3bert_tf import serving"),
        ("m3bert_tf.data.planted", "import keras"),
    ],
)
def test_a_planted_import_is_caught(tmp_path, dotted, line):
    """The check fails on an import the walls forbid, lazy ones too:
    serving/, evaluate/ and hear read models through runs/, never train/."""
    path = tmp_path / "planted.py"
    path.write_text(f"def later():\n    {line}\n")
    assert wrong_imports(dotted, str(path)), line


@pytest.mark.parametrize("level", range(len(LEVELS) - 1))
def test_each_level_imports_with_every_higher_room_blocked(level):
    """Top-level imports of every module of the level's rooms, in a fresh
    process where each room above raises ImportError on import."""
    above = [room for rooms in LEVELS[level + 1 :] for room in rooms if room != "__init__"]
    mine = [d for d, _ in modules() if room_of(d) in LEVELS[level] and d != "m3bert_tf"]
    code = (  # the package root first: it configures the numba cache
        "import importlib, sys\n"
        "import m3bert_tf\n"
        f"for room in {above!r}:\n"
        "    sys.modules['m3bert_tf.' + room] = None\n"
        f"for name in {mine!r}:\n"
        "    importlib.import_module(name)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=user_env(), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]


def test_no_module_imports_itself_through_others():
    """No circle of modules, lazy imports counted (a circle inside a room is
    still a circle)."""
    names = {dotted for dotted, _ in modules()}
    graph = {}
    for dotted, path in modules():
        targets = set()
        for target in imports(path):
            while target and target not in names:  # "m3bert_tf.x.y.Name" -> its module
                target = target.rpartition(".")[0]
            if target and not (dotted + ".").startswith(
                target + "."
            ):  # its own packages run first
                targets.add(target)
        graph[dotted] = targets
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)
