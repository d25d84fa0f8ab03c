"""From an image in the store to a running container: cold (layers to unpack) and warm.

    sudo .venv/bin/python bench/image_run.py [--n 20] [--warmup 2]

The image is image_pull.py's four-layer image (busybox, data files, a few thousand
small text files, a whiteout; about 50 MiB unpacked), loaded once from an OCI
archive into a temporary store, with the Cmd ``sh -c 'echo ready; exec sleep 3600'``.
One timed run is what the agent does to start a container of an image it has:

    store.lower_dirs(name)            unpack any layer not yet unpacked; overlay lower dirs
    store.image_config(name)          + resolve_process_args(Entrypoint, Cmd)
    Runtime.create(id, config)        overlay root (a fresh upper and work dir), namespaces,
                                      cgroup; init blocked before exec
    Runtime.start(id)                 exec the image's Cmd
    read(pipe)                        until the container's process writes "ready"

then, untimed, SIGKILL, ``waitpid`` and ``delete``. ``cold``: before each run the
image's unpacked layer directories are removed (and ``sync`` run), so the run unpacks
every layer from the stored blobs; ``warm``: the layers are there. Cold and warm runs
alternate. Prints a table, then one JSON line with p50/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from image_pull import make_layers, write_layout  # noqa: E402

from runtime.api import Runtime  # noqa: E402
from runtime.images import ImageStore, load_archive, resolve_process_args  # noqa: E402
from runtime.images.buildrun import BUILD_MOUNTS  # noqa: E402
from runtime.spec.model import ContainerConfig, Namespace, Overlay, Process, Root  # noqa: E402

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "podium-bench-image"
NAME = "bench/run:v1"
CMD = ("/bin/sh", "-c", "echo ready; exec sleep 3600")
PHASES = ("layers", "create", "start", "running")


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.store = ImageStore(work / "store")
        self.runtime = Runtime(root=work / "state", cgroup_parent=CGROUP_PARENT)
        self.count = 0

    def load(self) -> dict[str, int]:
        """Put the image in the store; the sizes of its layers."""
        layout = self.work / "layout"
        sizes = write_layout(make_layers(self.work), layout, NAME, cmd=CMD)
        archive = self.work / "image.tar"
        with tarfile.open(archive, "w") as tar:
            for entry in sorted(layout.iterdir()):
                tar.add(entry, arcname=entry.name)
        load_archive(self.store, archive, NAME)
        shutil.rmtree(layout)
        archive.unlink()
        return sizes

    def drop_layers(self) -> None:
        for diff_id in self.store.image_config(NAME).diff_ids:
            shutil.rmtree(self.store.layer_path(diff_id))
        os.sync()  # the next unpack is timed without earlier writes still being flushed

    def run(self) -> dict[str, float]:
        """One image-to-running start; each phase's seconds (``total`` too)."""
        self.count += 1
        cid = f"bench-image-{self.count}"
        scratch = self.work / "run" / cid
        marks = [time.perf_counter()]
        lower = self.store.lower_dirs(NAME)
        marks.append(time.perf_counter())
        cfg = self.store.image_config(NAME)
        for d in ("upper", "work", "merged"):
            (scratch / d).mkdir(parents=True)
        config = ContainerConfig(
            oci_version="1.2.0",
            process=Process(args=tuple(resolve_process_args(cfg.entrypoint, cfg.cmd)),
                            env=tuple(cfg.env), cwd=cfg.working_dir or "/"),
            root=Root(path=scratch / "merged", overlay=Overlay(
                lower=tuple(lower), upper=scratch / "upper", work=scratch / "work")),
            hostname="bench",
            mounts=BUILD_MOUNTS,
            namespaces=tuple(Namespace(t) for t in
                             ("pid", "network", "ipc", "uts", "mount", "cgroup")),
        )
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            state = self.runtime.create(cid, config, stdio=(null, w, w))
        finally:
            os.close(w)
            os.close(null)
        try:
            marks.append(time.perf_counter())
            self.runtime.start(cid)
            marks.append(time.perf_counter())
            said = os.read(r, 64)
            marks.append(time.perf_counter())
            if not said.startswith(b"ready"):
                raise SystemExit(f"container {cid} said {said!r} instead of 'ready'")
        finally:
            os.close(r)
            self.stop(cid, state.pid)
            shutil.rmtree(scratch)
        phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(PHASES)}
        phases["total"] = marks[-1] - marks[0]
        return phases

    def stop(self, cid: str, pid: int) -> None:
        try:
            self.runtime.kill(cid, signal.SIGKILL)
        except Exception:  # noqa: BLE001, S110 - it may have exited already
            pass
        os.waitpid(pid, 0)
        self.runtime.delete(cid, force=True)


def remove_cgroup_parent() -> None:
    for hierarchy in CGROUP_ROOT.iterdir():
        parent = hierarchy / CGROUP_PARENT
        if parent.is_dir():
            try:
                parent.rmdir()
            except OSError as e:
                print(f"warning: could not remove cgroup {parent}: {e.strerror}",
                      file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="timed runs of each case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("image_run.py needs root (namespaces, cgroups, overlay mounts)")
    work = Path(tempfile.mkdtemp(prefix="podium-bench-run-"))
    samples: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    try:
        bench = Bench(work)
        sizes = bench.load()
        for _ in range(args.warmup):
            bench.drop_layers()
            bench.run()
            bench.run()
        for i in range(args.n):
            # Alternate which case goes first, so neither always follows the other.
            for case in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
                if case == "cold":
                    bench.drop_layers()
                samples[case].append(bench.run())
            print(f"  run {i + 1}/{args.n} done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        remove_cgroup_parent()
    report(samples, sizes, args.n)
    return 0


def report(samples: dict[str, list[dict[str, float]]], sizes: dict[str, int], n: int) -> None:
    mib = sizes["uncompressed"] / (1024 * 1024)
    print(f"image present → running container: 4 layers, {mib:.1f} MiB unpacked, {n} runs")
    print(f"{'case':<6} {'p50 ms':>8} {'p99 ms':>8}   p50 ms of: "
          + " ".join(f"{p:>8}" for p in PHASES))
    figures: dict[str, object] = {"layers": 4, "unpacked_mib": round(mib, 2), "runs": n}
    for case in ("cold", "warm"):
        totals = [s["total"] * 1000 for s in samples[case]]
        p50, p99 = statistics.median(totals), percentile(totals, 99)
        phases = {p: round(statistics.median(s[p] for s in samples[case]) * 1000, 2)
                  for p in PHASES}
        print(f"{case:<6} {p50:>8.1f} {p99:>8.1f}   {'':>10} "
              + " ".join(f"{phases[p]:>8.1f}" for p in PHASES))
        figures[f"image_to_running_{case}_ms"] = {"p50": round(p50, 2), "p99": round(p99, 2)}
        figures[f"image_to_running_{case}_phases_p50_ms"] = phases
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
