"""Container start latency: podium (in-process and CLI) against runc and crun.

    sudo .venv/bin/python bench/container_start.py [--n 100] [--warmup 3]

Runs N sequential containers executing ``/bin/true`` from one busybox bundle,
five ways, each in two blocks of N/2 (see ``main`` for why blocks):

- ``inprocess``: ``Runtime.create`` + ``start`` + ``os.waitpid`` + ``delete``,
  as the agent calls the library: in an interpreter that imports only the runtime,
  as the agent's fork server does (``container_start_library.py`` says why);
- ``cli``: ``podium-runtime run`` as a subprocess;
- ``runc`` and ``crun``: ``<tool> run`` as a subprocess;
- ``python``: a bare ``python -c pass`` with the same interpreter (the floor the
  CLI cannot go below);
- ``imports``: ``python -c "import json, ctypes, prctl"``, the modules any Python
  OCI runtime needs (config.json; the namespace and mount calls Python 3.11 lacks;
  capabilities), so the CLI's floor is this plus the container's own work;
- ``pyfork``: ``os.fork`` of this process, the child ``os._exit``-ing at once, and
  ``os.waitpid``: the least a Python init costs before it does any work.

Every way uses the same config.json and its own temporary ``--root``; every
container gets a fresh ID. A run that fails (non-zero exit, exception) is never
timed: it is recorded with its stderr, and a way that never succeeds reports
null with the reason. Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LIBRARY_WORKER = Path(__file__).with_name("container_start_library.py")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "podium-bench"
ID_PREFIX = "podium-bench"
# crun 1.8 refuses config.json versions it does not know ("unknown version
# specified", e.g. for 1.2.0); every tool accepts 1.0.2, so the shared config says that.
OCI_VERSION = "1.0.2"
WAYS = ("inprocess", "cli", "runc", "crun", "python", "imports", "pyfork")
# Python's own costs, timed beside the runtimes to show the floors under the targets.
RUNTIME_IMPORTS = "import json, ctypes, prctl"


class RunFailed(Exception):
    """One run of one way did not succeed; the message says how."""


@dataclass
class Way:
    name: str
    run: Callable[[int], float]  # iteration -> elapsed seconds; raises RunFailed
    samples: list[float] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why the way was not run at all

    def once(self, i: int, timed: bool) -> None:
        try:
            elapsed = self.run(i)
        except RunFailed as e:
            self.failures.append({"iteration": i, "warmup": not timed, "error": str(e)})
            return
        if timed:
            self.samples.append(elapsed)


# -- host preparation ------------------------------------------------------------


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount, from mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        out.append((fields[4], rfields[0], rfields[2] if len(rfields) > 2 else ""))
    return out


def cgroup_mode() -> str:
    types = {point: fstype for point, fstype, _ in mounts()}
    root = types.get(str(CGROUP_ROOT))
    if root == "cgroup2":
        return "v2"
    unified = types.get(str(CGROUP_ROOT / "unified")) == "cgroup2"
    return "hybrid" if unified else "v1"


def free_hugetlb() -> str:
    """Mount a v1 hugetlb hierarchy when hugetlb sits in a hybrid host's unified
    hierarchy (crun refuses such a host). Left mounted. Returns what was done."""
    table = mounts()
    types = {point: fstype for point, fstype, _ in table}
    if types.get(str(CGROUP_ROOT)) != "tmpfs" or not any(t == "cgroup" for t in types.values()):
        return "not applicable: /sys/fs/cgroup is not a tmpfs of v1 hierarchies"
    controllers = CGROUP_ROOT / "unified" / "cgroup.controllers"
    if not controllers.exists() or "hugetlb" not in controllers.read_text().split():
        v1 = any(ft == "cgroup" and "hugetlb" in opts.split(",") for _, ft, opts in table)
        return ("not needed: hugetlb already has a v1 hierarchy" if v1
                else "not needed: the unified hierarchy holds no controller")
    target = CGROUP_ROOT / "hugetlb"
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(target)],
                   check=True, capture_output=True, text=True)
    return f"mounted a v1 hugetlb hierarchy at {target} (left mounted)"


def make_bundle(path: Path) -> None:
    from runtime.images.bases import busybox_rootfs as make_rootfs
    from runtime.spec import default_config

    make_rootfs(path / "rootfs")
    config = default_config(["/bin/true"], terminal=False)
    config["ociVersion"] = OCI_VERSION
    # No cgroupsPath: podium puts each container under --cgroup-parent, runc and
    # crun under /<id> in every hierarchy, which they remove after ``run``.
    (path / "config.json").write_text(json.dumps(config, indent=2))


# -- the ways --------------------------------------------------------------------


def tail(text: str, limit: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def subprocess_way(argv: Callable[[str], list[str]], cleanup: Callable[[str], None],
                   prefix: str) -> Callable[[int], float]:
    def run(i: int) -> float:
        cid = f"{ID_PREFIX}-{prefix}-{os.getpid()}-{i}"
        t0 = time.perf_counter()
        proc = subprocess.run(argv(cid), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            cleanup(cid)
            err = tail(proc.stderr.decode(errors="replace"))
            raise RunFailed(f"exit {proc.returncode}: {err}")
        return elapsed

    return run


def oci_cleanup(tool: str, root: Path) -> Callable[[str], None]:
    def cleanup(cid: str) -> None:
        subprocess.run([tool, "--root", str(root), "delete", "--force", cid],
                       capture_output=True)
        remove_cgroups(cid)

    return cleanup


def cli_cleanup(cli: str, root: Path) -> Callable[[str], None]:
    def cleanup(cid: str) -> None:
        subprocess.run([cli, "--root", str(root), "--cgroup-parent", CGROUP_PARENT,
                        "delete", "--force", cid], capture_output=True)
        remove_cgroups(f"{CGROUP_PARENT}/{cid}")

    return cleanup


def python_fork(_i: int) -> float:
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t0
    if status != 0:
        raise RunFailed(f"forked child ended with status {status}")
    return elapsed


class InProcess:
    """The library way, in an interpreter that imports only the runtime, as the agent's
    fork server is (see container_start_library.py); records each phase's time."""

    def __init__(self, root: Path, bundle: Path) -> None:
        from runtime.api import Runtime

        self.runtime = Runtime(root, CGROUP_PARENT)  # this side's, for the cleanup
        self.phases: dict[str, list[float]] = {"create": [], "start": [], "wait": [],
                                               "delete": []}
        self._proc = subprocess.Popen(
            [sys.executable, str(LIBRARY_WORKER), str(root), CGROUP_PARENT, str(bundle)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.at_fork_modules: list[str] = self._reply()["at_fork_modules"]

    def _reply(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RunFailed(f"library worker ended (exit {self._proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, i: int) -> float:
        assert self._proc.stdin is not None
        cid = f"{ID_PREFIX}-lib-{os.getpid()}-{i}"
        try:
            self._proc.stdin.write(cid + "\n")
            self._proc.stdin.flush()
        except OSError as e:  # the worker is gone: every later run fails the same way
            raise RunFailed(f"library worker gone: {e}") from None
        reply = self._reply()
        if "error" in reply:
            raise RunFailed(reply["error"])
        for name, seconds in zip(self.phases, reply["phases"], strict=True):
            self.phases[name].append(seconds)
        return float(sum(reply["phases"]))

    def close(self) -> None:
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()  # the worker ends at end of input
            except OSError:
                pass  # it ended already
        self._proc.wait(timeout=30)

    def force_delete(self, cid: str) -> None:
        try:
            self.runtime.delete(cid, force=True)
        except Exception:  # noqa: BLE001, S110 - it may never have been created
            pass


# -- cleanup ---------------------------------------------------------------------


def remove_cgroups(name: str) -> None:
    """rmdir ``name`` (and anything below it) in every cgroup hierarchy."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(d)
        _rmdir(top)


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except OSError as e:
        print(f"warning: could not remove cgroup {d}: {e.strerror}", file=sys.stderr)


def leftover_cgroups() -> list[str]:
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_dir():
            found += [str(p) for p in hierarchy.glob(f"{ID_PREFIX}*")]
    return found


def delete_leftovers(tmp: Path, lib: InProcess | None, tools: dict[str, str]) -> None:
    if lib is not None:
        for state in lib.runtime.containers():
            lib.force_delete(state.id)
    cli_root = tmp / "state-cli"
    if cli_root.is_dir():
        for entry in cli_root.iterdir():
            subprocess.run([tools["cli"], "--root", str(cli_root),
                            "--cgroup-parent", CGROUP_PARENT, "delete", "--force", entry.name],
                           capture_output=True)
    for tool in ("runc", "crun"):
        root = tmp / f"state-{tool}"
        if tool not in tools or not root.is_dir():
            continue
        listed = subprocess.run([tools[tool], "--root", str(root), "list", "-q"],
                                capture_output=True, text=True).stdout.split()
        for cid in listed:
            subprocess.run([tools[tool], "--root", str(root), "delete", "--force", cid],
                           capture_output=True)
    for path in leftover_cgroups():
        remove_cgroups(Path(path).name)




# -- figures ---------------------------------------------------------------------


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summary(way: Way) -> tuple[float | None, float | None]:
    if not way.samples:
        return None, None
    return statistics.median(way.samples), percentile(way.samples, 99)


def null_reason(way: Way) -> str | None:
    if way.skipped:
        return way.skipped
    if way.samples:
        return None
    if way.failures:
        return f"every run failed; first: {way.failures[0]['error']}"
    return "no runs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="timed containers per way")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per way first")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("container_start: needs root (it creates namespaces, cgroups and mounts)")

    sys.path.insert(0, str(REPO))
    from runtime.processes import reap_children

    hugetlb = free_hugetlb()
    mode = cgroup_mode()

    python = sys.executable
    tools = {"cli": str(Path(python).with_name("podium-runtime"))}
    for tool in ("runc", "crun"):
        found = shutil.which(tool)
        if found:
            tools[tool] = found

    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-"))
    lib: InProcess | None = None
    try:
        bundle = tmp / "bundle"
        make_bundle(bundle)
        for sub in ("state-lib", "state-cli", "state-runc", "state-crun"):
            (tmp / sub).mkdir()
        lib = InProcess(tmp / "state-lib", bundle)
        cli_root = tmp / "state-cli"
        ways = {
            "inprocess": Way("inprocess", lib.run),
            "cli": Way("cli", subprocess_way(
                lambda cid: [tools["cli"], "--root", str(cli_root), "--cgroup-parent",
                             CGROUP_PARENT, "run", "--bundle", str(bundle), cid],
                cli_cleanup(tools["cli"], cli_root), "cli")),
            "python": Way("python", subprocess_way(lambda _cid: [python, "-c", "pass"],
                                                   lambda _cid: None, "py")),
            "imports": Way("imports", subprocess_way(
                lambda _cid: [python, "-c", RUNTIME_IMPORTS], lambda _cid: None, "imports")),
            "pyfork": Way("pyfork", python_fork),
        }
        for tool in ("runc", "crun"):
            root = tmp / f"state-{tool}"
            if tool in tools:
                ways[tool] = Way(tool, subprocess_way(
                    lambda cid, t=tool, r=root: [tools[t], "--root", str(r), "run",
                                                 "--bundle", str(bundle), cid],
                    oci_cleanup(tools[tool], root), tool))
            else:
                ways[tool] = Way(tool, lambda _i: 0.0, skipped=f"{tool} is not installed")
        order = [ways[w] for w in WAYS]

        # In blocks: each way starts its containers back to back, as "N sequential
        # containers" means. Interleaving the ways would put an idle gap before every
        # container, and on cgroup v1 the first cgroup.procs write after a gap waits
        # out an RCU grace period (10-20 ms here, for podium and crun alike), so it
        # would measure the gap, not the runtime. The blocks run twice, in reversed
        # order the second time, so a noisy spell of this shared machine is spread
        # over the ways rather than landing on one. Warm-up runs are not timed.
        half = (args.n + 1) // 2
        rounds = [(order, half), (order[::-1], args.n - half)]
        done = 0
        serial = 0  # every container of every way gets its own ID
        for ways_in_order, count in rounds:
            for way in ways_in_order:
                if way.skipped is not None:
                    continue
                for i in range(-args.warmup, count):
                    serial += 1
                    way.once(serial, timed=i >= 0)
                    reap_children()
            done += count
            print(f"  ... {done} / {args.n}", file=sys.stderr)
    finally:
        if lib is not None:
            lib.close()
        delete_leftovers(tmp, lib, tools)
        reap_children()
        for hierarchy in CGROUP_ROOT.iterdir():
            if (hierarchy / CGROUP_PARENT).is_dir():
                remove_cgroups(CGROUP_PARENT)
                break
        shutil.rmtree(tmp, ignore_errors=True)

    report(ways, lib, args.n, mode, hugetlb)
    return 0


def report(ways: dict[str, Way], lib: InProcess | None, n: int, mode: str, hugetlb: str
           ) -> None:
    figures: dict[str, Any] = {}
    print(f"container start, /bin/true, n={n}, cgroups {mode}; hugetlb: {hugetlb}")
    print(f"{'way':<10} {'p50 ms':>8} {'p99 ms':>8} {'ok':>5} {'failed':>6}")
    for name in WAYS:
        way = ways[name]
        p50, p99 = summary(way)
        key = {"python": "python_startup", "imports": "python_imports",
               "pyfork": "python_fork"}.get(name, name)
        figures[f"{key}_p50_ms"] = ms(p50)
        figures[f"{key}_p99_ms"] = ms(p99)
        cell50 = f"{p50 * 1000:8.2f}" if p50 is not None else f"{'null':>8}"
        cell99 = f"{p99 * 1000:8.2f}" if p99 is not None else f"{'null':>8}"
        print(f"{name:<10} {cell50} {cell99} {len(way.samples):>5} {len(way.failures):>6}")
    if lib is not None and lib.phases["create"]:
        parts = "  ".join(f"{k} {statistics.median(v) * 1000:.2f}"
                          for k, v in lib.phases.items())
        print(f"inprocess phases, p50 ms: {parts}")
        figures["inprocess_phases_p50_ms"] = {
            k: ms(statistics.median(v)) for k, v in lib.phases.items()}
        figures["inprocess_at_fork_modules"] = lib.at_fork_modules

    lib50, crun50 = figures["inprocess_p50_ms"], figures["crun_p50_ms"]
    cli50, py50 = figures["cli_p50_ms"], figures["python_startup_p50_ms"]
    figures["inprocess_vs_crun"] = (round(lib50 / crun50, 3)
                                    if lib50 is not None and crun50 else None)
    figures["cli_overhead_ms"] = (round(cli50 - py50, 2)
                                  if cli50 is not None and py50 is not None else None)
    imports50 = figures["python_imports_p50_ms"]
    # The least any Python runtime's CLI adds to a bare interpreter: the imports it
    # cannot do without, plus the container's own work (the in-process path).
    figures["cli_floor_overhead_ms"] = (
        round(imports50 - py50 + lib50, 2)
        if None not in (imports50, py50, lib50) else None)
    figures["target_inprocess_at_or_below_crun"] = (
        None if figures["inprocess_vs_crun"] is None else figures["inprocess_vs_crun"] <= 1.0)
    figures["target_cli_within_25ms_of_python"] = (
        None if figures["cli_overhead_ms"] is None else figures["cli_overhead_ms"] <= 25.0)
    figures["n"] = n
    figures["cgroup_mode"] = mode
    figures["hugetlb"] = hugetlb
    figures["failures"] = {name: len(w.failures) for name, w in ways.items()}
    figures["failure_samples"] = {name: w.failures[:3] for name, w in ways.items()
                                  if w.failures}
    figures["null_reasons"] = {name: r for name, w in ways.items()
                               if (r := null_reason(w)) is not None}
    for name, reason in figures["null_reasons"].items():
        print(f"{name}: null — {reason}")
    for name, way in ways.items():
        for failure in way.failures[:3]:
            print(f"{name} failed (iteration {failure['iteration']}): {failure['error']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
