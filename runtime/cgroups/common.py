"""What the v1 and v2 drivers share: file access with named errors, parsing, waiting,
walking a cgroup's subtree, and the freeze-kill-thaw loop."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path

from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError

DEFAULT_TIMEOUT = 5.0  # seconds for freeze, thaw, kill and rmdir to settle
POLL = 0.01


def write(fs: CgroupFs, file: Path, value: str) -> None:
    try:
        fs.write(file, value)
    except FileNotFoundError:
        raise CgroupError(
            str(file), f"cannot write {value!r}: no such file (the kernel does not offer it here)"
        ) from None
    except OSError as e:
        raise CgroupError(str(file), f"cannot write {value!r}: {e.strerror or e}") from None


def read(fs: CgroupFs, file: Path) -> str:
    try:
        return fs.read(file).strip()
    except OSError as e:
        raise CgroupError(str(file), f"cannot read: {e.strerror or e}") from None


def read_optional(fs: CgroupFs, file: Path) -> str | None:
    """The file's content, or None when the kernel does not offer the file."""
    try:
        return fs.read(file).strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CgroupError(str(file), f"cannot read: {e.strerror or e}") from None


def read_int(fs: CgroupFs, file: Path, default: int = 0) -> int:
    text = read_optional(fs, file)
    if text is None or text == "":
        return default
    return parse_int(file, text)


def parse_int(file: Path, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CgroupError(str(file), f"expected a number, read {text!r}") from None


def read_keyed(fs: CgroupFs, file: Path) -> dict[str, int]:
    """A flat keyed file ("key value" per line: cpu.stat, memory.events); {} if absent."""
    text = read_optional(fs, file)
    result: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result


def read_pids(fs: CgroupFs, file: Path) -> list[int]:
    text = read_optional(fs, file)
    return [int(p) for p in (text or "").split()]


def levels(root: Path, path: str) -> list[Path]:
    """Every directory from the first below ``root`` down to ``path``'s own."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise CgroupError(path, "a cgroup path needs plain names below the root")
    return [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]


def make_dir(fs: CgroupFs, directory: Path) -> None:
    try:
        fs.mkdir(directory)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(str(directory), f"cannot create: {e.strerror or e}") from None


def subtree(fs: CgroupFs, directory: Path) -> list[Path]:
    """``directory`` and every cgroup below it, deepest first; [] if it does not exist."""
    if not fs.is_dir(directory):
        return []
    found: list[Path] = []
    stack = [directory]
    while stack:
        d = stack.pop()
        found.append(d)
        try:
            stack.extend(fs.subdirs(d))
        except FileNotFoundError:
            continue
    # Children always come after their parent in ``found``: reversed, they come first.
    return found[::-1]


def procs_below(fs: CgroupFs, directory: Path) -> set[int]:
    pids: set[int] = set()
    for d in subtree(fs, directory):
        pids.update(read_pids(fs, d / "cgroup.procs"))
    return pids


def remove_tree(fs: CgroupFs, directory: Path, timeout: float) -> None:
    """rmdir bottom-up. EBUSY is retried: a killed task can linger until it is reaped."""
    for d in subtree(fs, directory):
        deadline = time.monotonic() + timeout
        while True:
            try:
                fs.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise CgroupError(str(d), f"cannot remove: {e.strerror or e}") from None
                time.sleep(POLL)


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)


def freeze_and_kill(
    fs: CgroupFs,
    path: str,
    procs: Callable[[], list[int]],
    freeze: Callable[[], None] | None,
    thaw: Callable[[], None] | None,
    timeout: float,
) -> None:
    """SIGKILL everything in the cgroup until it stays empty.

    Freezing first stops the processes forking new ones between our reading
    cgroup.procs and the signals landing; thawing lets the killed ones (which a v1
    freezer holds) actually die.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not procs():
            return
        if time.monotonic() > deadline:
            raise CgroupError(path, f"processes {procs()} still alive {timeout:g}s after SIGKILL")
        frozen = False
        if freeze is not None:
            try:
                freeze()
                frozen = True
            except CgroupError:
                pass  # a process stuck in the kernel; kill what we can anyway
        for pid in procs():
            try:
                fs.kill(pid)
            except ProcessLookupError:
                pass
        if frozen and thaw is not None:
            thaw()
        wait_until(lambda: not procs(), min(0.2, max(0.0, deadline - time.monotonic())))
