"""Image pull time: podium against skopeo, from a registry on loopback.

    sudo .venv/bin/python bench/image_pull.py [--runs 5]

Builds a four-layer image (about 45 MiB unpacked, 35 MiB compressed) with the
standard library: the busybox root filesystem, incompressible data files, a few
thousand small text files, and a layer that adds a file and deletes one of the
small files (a whiteout). skopeo pushes it into Debian's ``docker-registry``
started on 127.0.0.1 and a free port. Then, for each run, interleaved:

- ``pull``: ``podium image pull`` as a subprocess into a fresh store: download,
  verify every digest, unpack every layer, name the image;
- ``pull_inprocess``: ``runtime.images.pull`` in this process, fresh store;
- ``skopeo``: ``skopeo copy docker://… dir:…`` into a fresh directory: download
  and verify, no unpacking (so podium does more work);
- ``unpack``: in the in-process run's store, the unpacked layers are removed and
  made again from the stored blobs (``ImageStore.lower_dirs``); throughput is the
  layers' uncompressed bytes over that time.

Prints a table of medians, then one JSON line. Stops the registry and removes
every temporary file at the end.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.images import ImageStore, pull  # noqa: E402
from runtime.images.bases import busybox_rootfs  # noqa: E402
from tests.support.registry import Registry, skopeo  # noqa: E402

PODIUM = Path(sys.executable).parent / "podium"
MIB = 1024 * 1024
WORDS = ("pod node image layer registry digest manifest overlay cgroup namespace "
         "scheduler agent runtime container volume service").split()


# --- the image ----------------------------------------------------------------------


def _file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
    tar.addfile(info)


def _layer(fill: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        fill(tar)
    return raw.getvalue()


def make_layers(work: Path) -> list[bytes]:
    """The uncompressed tars of the four layers, bottom first."""
    rng = random.Random(7)
    rootfs = busybox_rootfs(work / "rootfs")

    def base(tar: tarfile.TarFile) -> None:
        tar.add(rootfs, arcname=".")

    def data(tar: tarfile.TarFile) -> None:
        _dir(tar, "data")
        for i in range(4):
            _file(tar, f"data/blob-{i}.bin", rng.randbytes(5 * MIB))

    def text(tar: tarfile.TarFile) -> None:
        _dir(tar, "srv")
        for d in range(30):
            _dir(tar, f"srv/{d:02d}")
            for f in range(100):
                words = rng.choices(WORDS, k=rng.randint(400, 1000))
                _file(tar, f"srv/{d:02d}/page-{f:03d}.txt", " ".join(words).encode())

    def top(tar: tarfile.TarFile) -> None:
        _dir(tar, "data")
        _file(tar, "data/model.bin", rng.randbytes(10 * MIB))
        _dir(tar, "srv")
        _dir(tar, "srv/00")
        _file(tar, "srv/00/.wh.page-000.txt", b"")

    return [_layer(fill) for fill in (base, data, text, top)]


def _arch() -> str:
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_layout(layers: list[bytes], dest: Path, tag: str,
                 cmd: tuple[str, ...] = ("/bin/sh",)) -> dict[str, int]:
    """An OCI layout of ``layers`` (gzip) whose image runs ``cmd``; its sizes in bytes."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(blob: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        (blobs / digest[7:]).write_bytes(blob)
        return {"digest": digest, "size": len(blob)}

    compressed = [gzip.compress(tar, compresslevel=6, mtime=0) for tar in layers]
    descriptors = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(c)}
                   for c in compressed]
    config = put(json.dumps({
        "architecture": _arch(), "os": "linux",
        "config": {"Cmd": list(cmd), "Env": ["PATH=/bin:/usr/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]},
    }).encode())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": descriptors,
    }).encode())
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return {"compressed": sum(len(c) for c in compressed),
            "uncompressed": sum(len(t) for t in layers)}


# --- the timed ways ---------------------------------------------------------------------


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


@contextmanager
def fresh(path: Path) -> Iterator[Path]:
    """``path``, removed after the run, so every run starts from nothing."""
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pull_cli(work: Path, ref: str) -> float:
    with fresh(work / "store-cli") as store:
        argv = [str(PODIUM), "image", "pull", "-q", "--store", str(store), ref]
        start = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"podium image pull failed: {result.stderr.strip()}")
    return elapsed


def pull_inprocess(work: Path, ref: str) -> tuple[float, float]:
    """Seconds to pull into a fresh store; seconds to unpack its layers again."""
    with fresh(work / "store-lib") as root:
        store = ImageStore(root)
        pulled = timed(lambda: pull(store, ref))
        for diff_id in store.image_config(ref).diff_ids:
            shutil.rmtree(store.layer_path(diff_id))
        os.sync()  # the unpack is timed without the pull's dirty pages still being written
        unpacked = timed(lambda: store.lower_dirs(ref))
    return pulled, unpacked


def skopeo_copy(work: Path, ref: str) -> float:
    with fresh(work / "skopeo-dir") as dest:
        return timed(lambda: skopeo("copy", "--src-tls-verify=false", f"docker://{ref}",
                                    f"dir:{dest}", workdir=work))


# --- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("image_pull.py needs root (layers keep their owners and whiteouts are "
                 "device nodes)")
    for tool in (PODIUM, Path("/usr/bin/docker-registry")):
        if not tool.exists():
            sys.exit(f"{tool} is missing: make setup")
    if shutil.which("skopeo") is None:
        sys.exit("skopeo is missing: make setup")
    work = Path(tempfile.mkdtemp(prefix="podium-bench-pull-"))
    registry = Registry(work / "registry")
    try:
        layers = make_layers(work)
        sizes = write_layout(layers, work / "layout", "v1")
        registry.start()
        ref = f"{registry.host}/bench/layers:v1"
        skopeo("copy", "--dest-tls-verify=false", f"oci:{work / 'layout'}:v1",
               f"docker://{ref}", workdir=work)
        samples: dict[str, list[float]] = {"pull": [], "pull_inprocess": [], "skopeo": [],
                                           "unpack": []}
        for i in range(args.runs):
            # Rotate the order so a warm or busy moment favours no way.
            ways = ["pull", "pull_inprocess", "skopeo"]
            for way in ways[i % 3:] + ways[:i % 3]:
                if way == "pull":
                    samples["pull"].append(pull_cli(work, ref))
                elif way == "skopeo":
                    samples["skopeo"].append(skopeo_copy(work, ref))
                else:
                    pulled, unpacked = pull_inprocess(work, ref)
                    samples["pull_inprocess"].append(pulled)
                    samples["unpack"].append(unpacked)
            print(f"  run {i + 1}/{args.runs} done", file=sys.stderr)
    finally:
        if registry.process is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(samples, sizes, len(layers), args.runs)
    return 0


def report(samples: dict[str, list[float]], sizes: dict[str, int], layers: int,
           runs: int) -> None:
    med = {k: statistics.median(v) for k, v in samples.items()}
    unpacked_mib = sizes["uncompressed"] / MIB
    print(f"image pull from a loopback registry: {layers} layers, "
          f"{sizes['compressed'] / MIB:.1f} MiB compressed, {unpacked_mib:.1f} MiB unpacked, "
          f"{runs} runs (medians)")
    print(f"{'way':<16} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name in ("pull", "pull_inprocess", "skopeo", "unpack"):
        values = samples[name]
        print(f"{name:<16} {med[name]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    figures = {
        "layers": layers,
        "compressed_mib": round(sizes["compressed"] / MIB, 2),
        "unpacked_mib": round(unpacked_mib, 2),
        "runs": runs,
        "pull_s": round(med["pull"], 4),
        "pull_inprocess_s": round(med["pull_inprocess"], 4),
        "skopeo_pull_s": round(med["skopeo"], 4),
        "pull_vs_skopeo": round(med["pull"] / med["skopeo"], 3),
        "layer_unpack_s": round(med["unpack"], 4),
        "layer_unpack_mib_s": round(unpacked_mib / med["unpack"], 1),
    }
    print(f"podium pull / skopeo copy: {figures['pull_vs_skopeo']}x; "
          f"unpack: {figures['layer_unpack_mib_s']} MiB/s")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
