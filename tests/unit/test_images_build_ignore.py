""".dockerignore matching, and COPY's source selection with it (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.images.buildcopy import ContextTree, CopyError, expand_sources, plan_copy
from runtime.images.dockerignore import IgnoreRules
from runtime.images.imageview import ImageView


@pytest.mark.parametrize("patterns, path, excluded", [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),  # '*' stays within one component
    (["**/*.log"], "dir/sub/a.log", True),
    (["**/*.log"], "a.log", True),  # '**/' also matches no directory
    (["build"], "build/x/y.o", True),  # a parent that matches excludes what is below
    (["/build"], "build", True),
    (["./build/"], "build", True),
    (["docs/**"], "docs/a/b.md", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[!a-c]x"], "bx", False),
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "other.md", True),
    (["!README.md", "*.md"], "README.md", True),  # the last match wins
    (["# comment", "", "  "], "anything", False),
    (["secret\\*"], "secret*", True),
    (["secret\\*"], "secrets", False),
])
def test_patterns(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreRules(patterns).excluded(path) is excluded


def test_read_from_context(tmp_path: Path) -> None:
    assert not IgnoreRules.read(tmp_path).excluded("x")
    (tmp_path / ".dockerignore").write_text("x\n!x/keep\n")
    rules = IgnoreRules.read(tmp_path)
    assert rules.excluded("x/other") and not rules.excluded("x/keep")


def make_context(root: Path) -> Path:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a")
    (root / "src" / "a.pyc").write_text("compiled")
    (root / "src" / "sub" / "b.py").write_text("b")
    (root / "logs").mkdir()
    (root / "logs" / "x.log").write_text("log")
    (root / "logs" / "keep.log").write_text("keep")
    (root / "top.txt").write_text("top")
    (root / ".dockerignore").write_text("**/*.pyc\nlogs\n!logs/keep.log\n")
    return root


def targets(tree: ContextTree, sources: list[str], dest: str, workdir: str = "/") -> list[str]:
    return sorted(e.target for e in plan_copy(tree, sources, dest, workdir, ImageView([])))


def test_copy_applies_dockerignore(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    tree = ContextTree(ctx, IgnoreRules.read(ctx))
    assert targets(tree, ["src"], "/app/") == ["app/a.py", "app/sub", "app/sub/b.py"]
    # An excluded directory is made when a file in it is included again.
    assert targets(tree, ["."], "/") == [
        ".dockerignore", "logs", "logs/keep.log", "src", "src/a.py", "src/sub",
        "src/sub/b.py", "top.txt"]
    with pytest.raises(CopyError, match="src/a.pyc: not found in the build context"):
        plan_copy(tree, ["src/a.pyc"], "/x", "/", ImageView([]))


def test_copy_destinations(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    tree = ContextTree(ctx, IgnoreRules([]))
    assert targets(tree, ["top.txt"], "/etc/renamed") == ["etc/renamed"]
    assert targets(tree, ["top.txt"], "/etc/") == ["etc/top.txt"]
    assert targets(tree, ["top.txt"], "rel/", workdir="/work") == ["work/rel/top.txt"]
    assert targets(tree, ["src/*.py", "top.txt"], "/d/") == ["d/a.py", "d/top.txt"]
    with pytest.raises(CopyError, match="must be a directory and end with /"):
        plan_copy(tree, ["top.txt", "src/a.py"], "/file", "/", ImageView([]))
    with pytest.raises(CopyError, match="outside the build context"):
        expand_sources(tree, "../etc/passwd")


def test_copy_sets_owner_and_mode(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    tree = ContextTree(ctx, IgnoreRules([]))
    entries = plan_copy(tree, ["top.txt"], "/x", "/", ImageView([]), uid=7, gid=8, mode=0o640)
    assert [(e.uid, e.gid, e.mode) for e in entries] == [(7, 8, 0o640)]


def test_symlink_leaving_context_is_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "out").symlink_to("/etc")
    tree = ContextTree(ctx, IgnoreRules([]))
    with pytest.raises(CopyError, match="outside the build context"):
        plan_copy(tree, ["out"], "/x/", "/", ImageView([]))
