"""Boot test guests under QEMU's software emulation, on a network only the test sees.

``Lab`` makes a network namespace (``podium-vmtest-PID``) holding a bridge, the
host side's address on it and one tap per guest, and runs each QEMU inside it,
so the guests' addresses exist nowhere else. Two 9p shares reach every guest:
``project`` (this tree, read-only, at /podium as Vagrant syncs it) and ``work``
(the test's directory, at /vmwork: wheelhouse, results, command mailboxes).

Each QEMU runs under ``timeout`` and writes its serial console to a file; leaving
the ``with`` block ends every QEMU by its PID and deletes the namespace (and with
it the bridge and taps).

A guest runs what the host drops in its mailbox (see guest/podium-vm-boot):
``Guest.run(script)`` writes ``cmd-N.sh`` and waits for ``cmd-N.rc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.vm.image import GuestImage

SUBNET = "192.168.56"  # inside the test's namespace only; Vagrant's host-only default
HOST_IP = f"{SUBNET}.1"
POLL = 0.2


class GuestError(RuntimeError):
    """A guest failed to boot, died, or a command in it did not finish in time."""


@dataclass(frozen=True)
class GuestSpec:
    name: str
    ip: str = ""  # without one the guest has no network device
    memory_mb: int = 1024
    cpus: int = 2


@dataclass(frozen=True)
class Result:
    rc: int
    out: str


@dataclass
class Guest:
    spec: GuestSpec
    box: Path
    console: Path
    pidfile: Path
    proc: subprocess.Popen[bytes]
    commands: int = 0
    _ready_at: float = field(default=0.0)

    @property
    def name(self) -> str:
        return self.spec.name

    def alive(self) -> bool:
        return self.proc.poll() is None

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return " | ".join(t.strip() for t in text.splitlines()[-lines:] if t.strip())

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the kernel's start to the mailbox service's start."""
        deadline = time.monotonic() + timeout
        ready = self.box / "ready"
        while not ready.is_file():
            if not self.alive():
                raise GuestError(f"guest {self.name} exited before it was ready "
                                 f"(exit {self.proc.returncode}): {self.console_tail()}")
            if time.monotonic() > deadline:
                raise GuestError(f"guest {self.name} not ready after {timeout:g} s: "
                                 f"{self.console_tail()}")
            time.sleep(POLL)
        return float(ready.read_text().strip() or 0)

    def start_command(self, script: str) -> Path:
        self.commands += 1
        base = self.box / f"cmd-{self.commands:03d}"
        tmp = base.with_suffix(".tmp")
        tmp.write_text("set -e\n" + script + "\n")
        tmp.rename(base.with_suffix(".sh"))  # whole, or not at all, when the guest looks
        return base

    def wait_command(self, base: Path, timeout: float) -> Result:
        rc_file = base.with_suffix(".rc")
        deadline = time.monotonic() + timeout
        while not rc_file.is_file():
            if not self.alive():
                raise GuestError(f"guest {self.name} exited during {base.name}: "
                                 f"{self.console_tail()}")
            if time.monotonic() > deadline:
                out = _read(base.with_suffix(".out"))[-2000:]
                raise GuestError(f"guest {self.name}: {base.name} unfinished after "
                                 f"{timeout:g} s; output so far: {out}")
            time.sleep(POLL)
        return Result(int(rc_file.read_text().strip()), _read(base.with_suffix(".out")))

    def run(self, script: str, timeout: float = 120.0) -> Result:
        """Run a bash script in the guest as root; its exit code and output."""
        return self.wait_command(self.start_command(script), timeout)

    def check(self, script: str, timeout: float = 120.0) -> str:
        """``run``, failing with the output unless the script exits 0."""
        r = self.run(script, timeout)
        if r.rc != 0:
            raise GuestError(f"guest {self.name}: exit {r.rc} from {script.splitlines()[0]!r}:"
                             f" {r.out[-3000:]}")
        return r.out

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """End this guest's QEMU (and the timeout around it) by PID."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)  # timeout passes it on to QEMU
            if self.wait_exit(10) is None:
                qemu = _read(self.pidfile).strip()
                if qemu.isdigit():
                    _kill(int(qemu))
                _kill(self.proc.pid)
                self.proc.wait(timeout=10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Lab:
    """Guests on one bridge in a network namespace of the test's own."""

    def __init__(self, image: GuestImage, project: Path, work: Path,
                 guests: Sequence[GuestSpec], limit: float) -> None:
        self.image = image
        self.project = project
        self.work = work
        self.specs = list(guests)
        self.limit = limit  # seconds any one QEMU may run
        self.netns = f"podium-vmtest-{os.getpid()}"
        self.guests: dict[str, Guest] = {}
        self._netns_made = False

    def __enter__(self) -> Lab:
        try:
            self._network()
            for i, spec in enumerate(self.specs):
                self.guests[spec.name] = self._boot(i, spec)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getitem__(self, name: str) -> Guest:
        return self.guests[name]

    def _ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise GuestError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    def _network(self) -> None:
        self._ip("netns", "add", self.netns)
        self._netns_made = True
        ns = ("-n", self.netns)
        self._ip(*ns, "link", "set", "lo", "up")
        self._ip(*ns, "link", "add", "vmbr0", "type", "bridge")
        self._ip(*ns, "addr", "add", f"{HOST_IP}/24", "dev", "vmbr0")
        self._ip(*ns, "link", "set", "vmbr0", "up")
        for i, spec in enumerate(self.specs):
            if spec.ip:
                self._ip(*ns, "tuntap", "add", "dev", f"vmtap{i}", "mode", "tap")
                self._ip(*ns, "link", "set", f"vmtap{i}", "master", "vmbr0", "up")

    def _boot(self, index: int, spec: GuestSpec) -> Guest:
        box = self.work / "guests" / spec.name
        box.mkdir(parents=True, exist_ok=True)
        for old in box.iterdir():
            old.unlink()
        console = self.work / f"{spec.name}.console.log"
        pidfile = self.work / f"{spec.name}.qemu.pid"
        cmdline = ["console=ttyS0", "root=/dev/vda", "panic=-1", "net.ifnames=0", "quiet",
                   f"systemd.hostname={spec.name}", f"podium.name={spec.name}"]
        net: list[str] = []
        if spec.ip:
            cmdline += [f"podium.ip={spec.ip}/24", f"podium.gw={HOST_IP}"]
            net = ["-netdev", f"tap,id=n0,ifname=vmtap{index},script=no,downscript=no",
                   "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:56:00:{index + 10:02x}"]
        qemu = [
            "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
            "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
            "-nographic", "-nodefaults", "-no-reboot", "-serial", f"file:{console}",
            "-pidfile", str(pidfile),
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", " ".join(cmdline),
            "-drive", f"file={self.image.disk},format=raw,if=virtio,snapshot=on",
            "-virtfs", f"local,path={self.project},mount_tag=project,security_model=none,"
                       "readonly=on",
            "-virtfs", f"local,path={self.work},mount_tag=work,security_model=none",
            *net,
        ]
        argv = ["ip", "netns", "exec", self.netns,
                "timeout", "--kill-after=10", f"{self.limit:.0f}", *qemu]
        with open(self.work / f"{spec.name}.qemu.err", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        return Guest(spec, box, console, pidfile, proc)

    def host(self, argv: Sequence[str], timeout: float = 60.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on the host inside the guests' network namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, env=env)

    def close(self) -> None:
        for guest in self.guests.values():
            guest.stop()
        if self._netns_made:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            self._netns_made = False
