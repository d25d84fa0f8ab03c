"""Regenerate the Python modules of ``proto/podium/v1`` from its ``.proto`` files.

Run from anywhere (the repository root is found from this file)::

    python -m proto.generate             # rewrite the committed modules
    python -m proto.generate --out DIR   # write DIR/proto/podium/v1/... instead

It runs protoc from the repository root with ``-I .``, so every import is by
repository path and the generated code reads ``from proto.podium.v1 import …``.
Outputs: ``*_pb2.py`` (messages), ``*_pb2_grpc.py`` (services) and the
``.pyi`` stubs of both from mypy-protobuf, so strict mypy sees real types.

The generated files are committed, and ``tests/unit/test_proto.py`` fails when
they differ from what this script makes: edit the ``.proto`` files, then run it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("proto/podium/v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class GenerateError(Exception):
    """protoc or one of its plugins is missing or failed."""


def proto_files(root: Path = REPO_ROOT) -> list[Path]:
    """The .proto files, relative to ``root``, in a stable order."""
    return sorted(p.relative_to(root) for p in (root / PROTO_DIR).glob("*.proto"))


def generated_files(directory: Path) -> list[Path]:
    """The generated modules in ``directory`` (one proto package folder)."""
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    )


def _plugin(name: str) -> str:
    # The plugins are scripts installed beside the interpreter; a virtualenv
    # that is not activated is not on PATH, so look there first.
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise GenerateError(f"{name} not found: pip install mypy-protobuf")
    return found


def protoc_command(out: Path, root: Path = REPO_ROOT) -> list[str]:
    out_arg = str(out)
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_arg}",
        f"--grpc_python_out={out_arg}",
        f"--mypy_out={out_arg}",
        f"--mypy_grpc_out={out_arg}",
        *(str(p) for p in proto_files(root)),
    ]


def generate(out: Path, root: Path = REPO_ROOT) -> list[Path]:
    """Write the generated modules under ``out`` and return their paths.

    When ``out`` is the repository root, modules whose ``.proto`` is gone are
    removed first, so the folder holds exactly what the ``.proto`` files make.
    """
    out = out.resolve()
    target = out / PROTO_DIR
    target.mkdir(parents=True, exist_ok=True)
    if out == root.resolve():
        for stale in generated_files(target):
            stale.unlink()
    result = subprocess.run(
        protoc_command(out, root), cwd=root, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise GenerateError(f"protoc failed ({result.returncode}):\n{result.stderr.strip()}")
    return generated_files(target)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proto.generate", description="Regenerate proto/podium/v1's modules."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="root to write proto/podium/v1/ under (default: the repository)",
    )
    args = parser.parse_args(argv)
    try:
        written = generate(args.out)
    except GenerateError as err:
        print(f"proto.generate: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
