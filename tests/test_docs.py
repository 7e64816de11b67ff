"""The README and docs/ are code: their links resolve, every `--flag` written
next to a `bin/<tool>` is one that tool defines, and the README's quick start
runs as written (on the example corpus, tiny configs)."""

import functools
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, user_env

PAGES = [
    os.path.join(ROOT, "README.md"),
    *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
]
README_LINES = 250
# What a bin/ command reads like in a code block or span: up to a comment.
COMMAND = re.compile(r"(?<![\w./-])bin/(\w+)([^#`\n]*)")
# Flags absl's app.run adds to every tool.
ABSL_FLAGS = {"flagfile", "undefok", "help", "helpfull", "helpshort", "helpxml"}
FLAG = re.compile(r"(?<![\w-])--(?:\[no\])?([a-z][a-z0-9_]*)")


def _rel(path):
    return os.path.relpath(path, ROOT)


def _code(text: str) -> list[str]:
    """Fenced code blocks (lines continued by a backslash joined) and inline spans."""
    out = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
        out += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += re.findall(r"`([^`\n]+)`", prose)
    return out


def test_the_readme_is_one_or_two_screens():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= README_LINES


def broken_links(page: str, text: str) -> list[str]:
    """The relative links of `page` (its text) that lead nowhere or out of
    the repository: a clone has nothing beside it."""
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        if not path.startswith(ROOT + os.sep):
            wrong.append(f"{target} (outside the repository)")
        elif not os.path.exists(path):
            wrong.append(f"{target} (no such file)")
    return wrong


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves_inside_the_repository(page):
    with open(page) as f:
        wrong = broken_links(page, f.read())
    assert not wrong, f"{_rel(page)}: {wrong}"


# What only the authors' working folder had: the repository cites the paper
# by its reference and holds its contract in docs/contract.md.
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|m3bert-paper\.txt")


def outside_mentions(root: str) -> list[str]:
    """`file:line` of every mention of a file outside the repository in the
    sources, docs, configs and build files under `root`."""
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".egg-info")]
        for name in names:
            if not name.endswith((".py", ".md", ".flags", ".sh", ".toml", ".cfg")) and (
                name not in ("Makefile",) and "bin" not in directory.split(os.sep)[-1:]
            ):
                continue
            path = os.path.join(directory, name)
            if path == os.path.abspath(__file__):
                continue  # this test names what it looks for
            with open(path, errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if OUTSIDE.search(line):
                        found.append(f"{os.path.relpath(path, root)}:{number}")
    return found


def test_nothing_points_outside_the_repository():
    found = outside_mentions(ROOT)
    assert not found, f"mentions of files a clone does not have: {found}"


def test_a_planted_outside_link_or_mention_fails(tmp_path):
    page = os.path.join(ROOT, "docs", "planted.md")
    text = "See [the paper](../../shared/reference/x.txt) and [x](missing.md)."
    assert broken_links(page, text) == [
        "../../shared/reference/x.txt (outside the repository)",
        "missing.md (no such file)",
    ]
    (tmp_path / "m.py").write_text('"""As DESIGN.md says."""\n')
    (tmp_path / "c.flags").write_text("# see ../shared/STYLE.md\n")
    assert sorted(outside_mentions(str(tmp_path))) == ["c.flags:1", "m.py:1"]


@functools.cache
def tool_flags(tool: str) -> frozenset:
    """The flags `bin/<tool>` defines (absl's own included), from its define
    function, in a process of its own (tools share flag names)."""
    path = os.path.join(ROOT, "bin", tool)
    code = (
        "import importlib.machinery, importlib.util, re\n"
        "from absl import flags\n"
        f"path = {path!r}\n"
        "loader = importlib.machinery.SourceFileLoader('tool', path)\n"
        "module = importlib.util.module_from_spec(importlib.util.spec_from_loader('tool', loader))\n"
        "loader.exec_module(module)\n"
        "name = re.search(r'cli\\.run\\(([\\w.]+), main\\)', open(path).read()).group(1)\n"
        "define = module\n"
        "for part in name.split('.'):\n"
        "    define = getattr(define, part)\n"
        "define()\n"
        "print(' '.join(flags.FLAGS))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=user_env()
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return frozenset(out.stdout.split()) | ABSL_FLAGS


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_flag_next_to_a_tool_is_one_it_defines(page):
    with open(page) as f:
        text = f.read()
    unknown = []
    for line in _code(text):
        for tool, rest in COMMAND.findall(line):
            if not os.path.exists(os.path.join(ROOT, "bin", tool)):
                unknown.append(f"bin/{tool} (no such tool)")
                continue
            defined = tool_flags(tool)
            own = re.sub(
                r"=(\"[^\"]*\"|'[^']*')", "=", rest.split("bin/")[0]
            )  # quoted values: another program's
            for name in FLAG.findall(own):
                if name not in defined and not (
                    name.startswith("no") and name[2:] in defined
                ):
                    unknown.append(f"bin/{tool} --{name}")
    assert not unknown, f"{_rel(page)}: flags the tools do not define: {unknown}"


def quick_start() -> list[str]:
    """The commands of the README's quick-start block."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path):
    """In a directory holding what `make demo` leaves first (the example
    corpus, smaller), every command exits 0 and leaves its output."""
    from m3bert_tf.demo import corpus

    corpus.write_example_corpus(
        str(tmp_path / "demo_output" / "corpus"), num_tracks=48, max_duration=10.0
    )
    commands = quick_start()
    assert commands[0] == "source .venv/bin/activate"
    for command in commands[1:]:
        argv = shlex.split(command)
        assert argv[0].startswith("bin/"), command
        argv = [sys.executable, os.path.join(ROOT, argv[0])] + [
            a.replace("=configs/", f"={ROOT}/configs/") for a in argv[1:]
        ]
        res = subprocess.run(
            argv, cwd=tmp_path, env=user_env(), capture_output=True, text=True
        )
        assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
    for made in (
        "shards/manifest.json",
        "pretrain/encoder.keras",
        "finetune/multitask.keras",
        "export/1/saved_model.pb",
        "embeddings/index.csv",
        "evaluate/results.md",
    ):
        assert (tmp_path / "work" / made).exists(), made  # fmt: skip


def test_the_signature_table_of_docs_lists_every_signature():
    """docs/serve.md's table names exactly `serving.signatures.SIGNATURES`."""
    from m3bert_tf.serving.signatures import SIGNATURES

    with open(os.path.join(ROOT, "docs", "serve.md")) as f:
        rows = re.findall(r"^\| `(\w+)`", f.read(), flags=re.M)
    assert sorted(rows) == sorted(s.name for s in SIGNATURES)
