"""Terminals: a pty for a container's process, its master handed to the caller.

With ``process.terminal: true`` a container engine passes ``--console-socket S``,
a unix socket it listens on, and expects the runtime to send the pty's master
over it; the engine then owns the container's terminal. The steps:

1. The caller connects to ``S`` before forking (``connect_console``), so a bad
   socket fails at once with one line, and the connection passes to the child.
2. The container's process — the init after its root is in place, or an exec'd
   process after it joined the container's mount namespace — opens
   ``/dev/ptmx``, which is the container's own devpts (``/dev/ptmx`` links to
   ``pts/ptmx``), so the slave is ``/dev/pts/N`` as the container sees it. It
   makes the slave its controlling terminal (it called ``setsid`` already) and
   its stdin, stdout and stderr, and sends the master with SCM_RIGHTS, the
   slave's path as the message (``Console.attach``).
3. The receiver (``receive_master``) owns the master from then on.

A caller that wants the terminal itself — ``run`` and ``exec`` in the
foreground — listens on a socket of its own (``ConsoleListener``) and copies
between its stdio and the master until the process ends (``relay``).

This module is imported only when a terminal is asked for: sockets cost a few
milliseconds of start-up every other command need not pay. The init runs its
code through a ``Console`` made before the fork, so nothing is imported after
``pivot_root``, when the host's files are out of reach.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import termios
import tty
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.spec.model import Process

# <asm-generic/ioctls.h>; Python's termios does not export these two.
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
_CHUNK = 65536


def _reason(e: OSError) -> str:
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# -- the caller's side ------------------------------------------------------------


class Console(NamedTuple):
    """A connected console socket and what the process does with its terminal."""

    fd: int  # the connected socket, close-on-exec
    size: tuple[int, int] | None  # (height, width) from process.consoleSize
    owner: int  # the process's uid: its terminal must be its own to use it

    def attach(self, sys: sc.Syscalls | None) -> None:
        """In the container's process, after ``setsid``: take a new pty as the
        controlling terminal and stdio, and send the master. With ``sys``, the slave
        is also bind-mounted on ``/dev/console`` (for the init, as runc does)."""
        master = slave = -1
        try:
            master, slave, name = open_pty()
            if self.size is not None:
                set_size(master, self.size)
            if self.owner != 0:
                os.fchown(slave, self.owner, -1)
            if sys is not None:
                _mount_console(name, sys)
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for target in (0, 1, 2):
                os.dup2(slave, target)
            send_master(self.fd, master, name)
        except OSError as e:
            raise SetupError(f"console: {_reason(e)}"
                             + (f": {e.filename}" if e.filename else "")) from None
        finally:
            for fd in (master, slave, self.fd):
                if fd > 2:
                    _close(fd)


def connect_console(path: Path, process: Process) -> Console:
    """Connect to the caller's console socket (before forking the process)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        raise SetupError(f"console socket {path}: {_reason(e)}") from None
    return Console(fd=sock.detach(), size=process.console_size, owner=process.user.uid)


def receive_master(sock: socket.socket) -> tuple[int, str]:
    """The master sent over a connected console socket, and the slave's path."""
    message, fds, _, _ = socket.recv_fds(sock, 4096, 4)
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        raise SetupError("console socket: the container sent no terminal")
    # recv_fds drops its flags argument (so no MSG_CMSG_CLOEXEC): no child may inherit it.
    os.set_inheritable(fds[0], False)
    return fds[0], message.decode(errors="replace")


class ConsoleListener:
    """A console socket of one's own, in a fresh private directory, for a caller that
    keeps the terminal itself. ``receive`` takes the master once ``create`` or
    ``exec`` returned (the process sent it before reporting ready)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="podium-console-"))
        self.path = self._dir / "console.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(1)

    def receive(self, timeout: float = 10.0) -> int:
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except TimeoutError:
            raise SetupError(f"console socket {self.path}: nothing connected") from None
        with conn:
            conn.settimeout(timeout)
            return receive_master(conn)[0]

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ConsoleListener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- ptys and fds ---------------------------------------------------------------


def open_pty() -> tuple[int, int, str]:
    """(master, slave, slave's path) of a new pty from ``/dev/ptmx`` as this process
    sees it; neither becomes a controlling terminal by being opened."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        (number,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))
        name = f"/dev/pts/{number}"
        slave = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave, name


def set_size(fd: int, size: tuple[int, int]) -> None:
    height, width = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    height, width, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return height, width


def send_master(sock_fd: int, master: int, name: str) -> None:
    """One message: the slave's path as data, the master as SCM_RIGHTS (runc's form)."""
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    finally:
        sock.detach()  # the caller closes the fd


def _mount_console(name: str, sys: sc.Syscalls) -> None:
    """Bind the slave on /dev/console, so programs that write there reach the terminal."""
    try:
        os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise SetupError(f"console: /dev/console: {_reason(e)}") from None
    sys.mount(name, "/dev/console", None, sc.MS_BIND, None)


# -- the foreground: our stdio <-> the master ---------------------------------------


def relay(master: int, pid: int, stdin: int = 0, stdout: int = 1) -> int:
    """Copy ``stdin`` to the terminal and the terminal to ``stdout`` until ``pid`` (our
    child) ends; returns its wait status. A terminal on ``stdin`` is put in raw mode —
    the container's terminal does the line editing and echo — and restored after;
    its size is the container's, also when it changes (SIGWINCH)."""
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        _copy_size(stdin, master)
        # TCSANOW: keys typed before the container was up are not thrown away.
        tty.setraw(stdin, termios.TCSANOW)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)

    def on_winch(_signum: int, _frame: FrameType | None) -> None:
        if saved is not None:
            _copy_size(stdin, master)

    old_chld = signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # wakes select
    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        return _copy_loop(master, pid, stdin, stdout, wake_r)
    finally:
        signal.signal(signal.SIGCHLD, old_chld)
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def _copy_loop(master: int, pid: int, stdin: int, stdout: int, wake: int) -> int:
    reading_stdin = True
    status: int | None = None
    while True:
        if status is None:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status = wait_status
        # Once the process has ended, only what is left in the terminal is copied.
        timeout = 0.2 if status is not None else None
        watch = [master, wake] + ([stdin] if reading_stdin and status is None else [])
        ready, _, _ = select.select(watch, [], [], timeout)
        if not ready and status is not None:
            return status
        if wake in ready:
            _drain(wake)
        if master in ready:
            try:
                data = os.read(master, _CHUNK)
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: every slave is closed
                    raise
                data = b""
            if data:
                _write_all(stdout, data)
            elif status is not None:
                return status
            else:
                # The process closed its terminal but lives on: wait for its end only.
                status = os.waitpid(pid, 0)[1]
                return status
        if stdin in ready:
            data = os.read(stdin, _CHUNK)
            if data:
                _write_all(master, data)
            else:
                reading_stdin = False  # end of input; the terminal stays open


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_size(source: int, target: int) -> None:
    try:
        set_size(target, get_size(source))
    except OSError:
        pass
