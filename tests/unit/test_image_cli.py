"""``podium image …``: argument handling, output and errors, in-process on a temp store."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.cli import UsageError, build_parser, main, one_line
from client.cli.changes import apply_changes
from client.cli.image import find_image, read_credentials, store_root
from client.cli.output import age, human_size, parse_time, table
from runtime.images import ImageNotFound, InvalidReference

COMMANDS = ("import", "load", "save", "pull", "push", "ls", "inspect", "rm", "prune", "tag")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help, usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "images"
    monkeypatch.setenv("PODIUM_IMAGE_STORE", str(root))
    return root


@pytest.fixture
def rootfs_tar(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"box\n\n"))
    return path


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--store", "/s", "image", "ls"], ["image", "--store", "/s", "ls"],
    ["image", "ls", "--store", "/s"], ["image", "--store", "/x", "ls", "--store", "/s"],
])
def test_store_option_anywhere(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_IMAGE_STORE", "/from-env")
    assert store_root(build_parser().parse_args(argv)) == Path("/s")


def test_store_from_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["image", "ls"])
    monkeypatch.setenv("PODIUM_IMAGE_STORE", "/from-env")
    assert store_root(args) == Path("/from-env")
    monkeypatch.delenv("PODIUM_IMAGE_STORE")
    assert store_root(args) == Path("/var/lib/podium/images")


def test_debug_anywhere() -> None:
    parser = build_parser()
    assert parser.parse_args(["image", "ls"]).debug is False
    assert parser.parse_args(["--debug", "image", "ls"]).debug is True
    assert parser.parse_args(["image", "ls", "--debug"]).debug is True


def test_no_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2 and err.startswith("usage: podium")
    code, _, err = run(capsys, "image")
    assert code == 2 and "import" in err and "prune" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "image", command, "--help")
    assert code == 0 and "examples:" in out and f"podium image {command}" in out


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "image", "import", "rootfs.tar")
    assert code == 2
    assert "podium image import: error: the following arguments are required: NAME" in err


def test_save_takes_names_then_the_archive() -> None:
    args = build_parser().parse_args(["image", "save", "a", "b:1", "out.tar"])
    assert args.names == ["a", "b:1"] and args.archive == "out.tar"


def test_push_destination_is_optional() -> None:
    args = build_parser().parse_args(["image", "push", "app:1"])
    assert (args.name, args.reference) == ("app:1", None)


# --- credentials ----------------------------------------------------------------------


def _cred_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["image", "pull", *argv, "reg.test/app"])


def test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_credentials(_cred_args()) is None
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    creds = read_credentials(_cred_args("-u", "alice", "--password-stdin"))
    assert creds is not None and (creds.username, creds.password) == ("alice", "s3cret")
    with pytest.raises(UsageError, match="--username needs --password-stdin"):
        read_credentials(_cred_args("-u", "alice"))
    with pytest.raises(UsageError, match="--password-stdin needs --username"):
        read_credentials(_cred_args("--password-stdin"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(UsageError, match="empty"):
        read_credentials(_cred_args("-u", "alice", "--password-stdin"))


def test_username_without_password_stdin_exits_2(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "image", "pull", "-u", "alice", "reg.test/app")
    assert code == 2 and err == ("podium: --username needs --password-stdin (the password is "
                                 "read from standard input, never from the command line)\n")


# --- errors ---------------------------------------------------------------------------


def test_bad_name_is_one_line_exit_1(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "image", "pull", "Not/A:Name:")
    assert code == 1 and out == ""
    assert err.startswith("podium: invalid image name") and err.count("\n") == 1
    assert not store.exists()  # refused before the store was touched


def test_debug_raises(store: Path) -> None:
    with pytest.raises(InvalidReference):
        main(["--debug", "image", "pull", "Not/A:Name:"])


def test_one_line() -> None:
    assert one_line(FileNotFoundError(2, "No such file or directory", "x.tar")) == \
        "No such file or directory: x.tar"
    assert one_line(ImageNotFound("image a not found")) == "image a not found"
    assert one_line(ValueError("bad\nthing")) == "ValueError: bad thing"


def test_unknown_change_exits_2(store: Path, rootfs_tar: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "image", "import", "-c", "RUN true", str(rootfs_tar), "x")
    assert code == 2 and "unknown instruction 'RUN'" in err


# --- on a real store in a temporary directory -------------------------------------------


def test_import_ls_rm_prune(store: Path, rootfs_tar: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "image", "ls") == (0, "REPOSITORY   TAG   IMAGE ID   CREATED   SIZE\n", "")
    code, out, _ = run(capsys, "image", "import", "-c", "ENV A=1", str(rootfs_tar), "box:1")
    assert (code, out) == (0, "docker.io/library/box:1\n")
    code, out, _ = run(capsys, "image", "ls")
    header, row = out.splitlines()
    assert row.split()[:2] == ["box", "1"] and row.index("box") == header.index("REPOSITORY")
    code, out, _ = run(capsys, "image", "ls", "-q")
    image_id = out.strip()
    [entry] = json.loads(run(capsys, "image", "ls", "--format", "json")[1])
    assert entry["id"] == image_id and entry["digest"].startswith("sha256:" + image_id)
    info = json.loads(run(capsys, "image", "inspect", image_id[:6])[1])
    assert info["config"]["config"]["Env"][1:] == ["A=1"]
    assert info["config"]["config"]["Env"][0].startswith("PATH=")
    assert run(capsys, "image", "rm", "box:1", "box:2") == (
        1, "untagged: docker.io/library/box:1\n",
        "podium: image box:2 not found: pull, load or import it\n")
    code, out, _ = run(capsys, "image", "prune")
    assert code == 0 and out.startswith("removed 3 blobs")


# --- finding an image by name or ID ------------------------------------------------------


@dataclass
class _Summary:
    name: str
    digest: str


class _FakeStore:
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def resolve(self, text: str) -> str:
        if text in self.names:
            return self.names[text]
        if text.startswith("sha256:") and text in self.names.values():
            return text
        if text.startswith("Bad"):
            raise InvalidReference(text, "name", "bad")
        raise ImageNotFound(f"image {text} not found")

    def list(self) -> list[_Summary]:
        return [_Summary(n, d) for n, d in self.names.items()]


def test_find_image() -> None:
    a, b = "sha256:" + "ab" * 32, "sha256:abab" + "cd" * 30
    store = _FakeStore({"abab": b, "x": a, "y": b})

    def find(text: str) -> str:
        return find_image(store, text)  # type: ignore[arg-type]

    assert find("abab") == "abab"  # a name wins over an ID that looks like it
    assert find("ababa") == a and find("ababc") == b and find(a) == a
    with pytest.raises(UsageError, match="ID sha256:abab is ambiguous"):
        find("sha256:abab")
    with pytest.raises(ImageNotFound):
        find("ffff")  # looks like an ID, matches none
    with pytest.raises(ImageNotFound):
        find("abc")  # too short to be taken for an ID
    with pytest.raises(InvalidReference):
        find("Bad")


# --- --change ---------------------------------------------------------------------------


def test_apply_changes() -> None:
    config = apply_changes([
        'CMD ["python3", "-m", "http.server"]', "ENTRYPOINT tini --", "ENV A=1 B='two words'",
        "ENV A=3", "env LANG C.UTF-8", "LABEL org.x=1", "WORKDIR /app", "USER 1000:1000",
        "EXPOSE 8080 53/udp", "STOPSIGNAL SIGINT",
    ])
    assert config == {
        "Cmd": ["python3", "-m", "http.server"],
        "Entrypoint": ["/bin/sh", "-c", "tini --"],
        "Env": ["B=two words", "A=3", "LANG=C.UTF-8"],
        "Labels": {"org.x": "1"}, "WorkingDir": "/app", "User": "1000:1000",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "StopSignal": "SIGINT",
    }


@pytest.mark.parametrize("change, problem", [
    ("CMD", "needs a value"), ('CMD ["a", 1]', "JSON list of strings"),
    ("CMD [nope", "JSON list"), ("EXPOSE http", "not a port"), ("EXPOSE 70000", "not a port"),
    ("LABEL a=1 b", "not key=value"), ("FROM busybox", "unknown instruction"),
])
def test_bad_changes(change: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        apply_changes([change])


# --- output -----------------------------------------------------------------------------


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 4_260_000, 68_600_000, 2_000_000_000)] == \
        ["0B", "999B", "1kB", "4.26MB", "68.6MB", "2GB"]


def test_age() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert age("2024-05-01T11:57:00Z", now) == "3 minutes ago"
    assert age("2024-05-01T11:59:59.123456789Z", now) == "Less than a second ago"
    assert age("2024-04-17T12:00:00+00:00", now) == "2 weeks ago"
    assert age("2023-05-01T11:00:00Z", now) == "1 year ago"
    assert age("", now) == age("yesterday", now) == "N/A"
    assert parse_time("2024-05-01T11:59:59.123456789Z") is not None


def test_table() -> None:
    out = io.StringIO()
    table(("A", "LONGER"), [("xxxx", "1"), ("y", "")], out)
    assert out.getvalue() == "A      LONGER\nxxxx   1\ny\n"
