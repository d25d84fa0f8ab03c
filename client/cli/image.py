"""``podium image …``: the node's image store, directly (no daemon), like ``ctr``/``crictl``.

One thin ``cmd_*`` per command over ``runtime.images``; this module only reads
arguments and prints. Images are named as Docker names them (``busybox`` is
``docker.io/library/busybox:latest``) or by ID: the first hex digits of the
manifest digest that ``ls`` shows (4 or more), or the whole ``sha256:…`` digest.

The store is ``--store DIR``, else ``$PODIUM_IMAGE_STORE``, else
``/var/lib/podium/images``; the agent uses the same store under the same locks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.cli import UsageError, one_line
from client.cli.output import age, human_size, print_json, table

if TYPE_CHECKING:
    from runtime.images import Credentials, ImageStore

STORE_ENV = "PODIUM_IMAGE_STORE"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ID = re.compile(r"(sha256:)?[0-9a-f]{4,64}")

_HELP = "manage the images on this node"
_EXAMPLES = {
    "image": """examples:
  podium image import rootfs.tar.gz busybox:latest
  podium image pull 127.0.0.1:5000/team/app:1
  podium image ls
  podium image ls --store /tmp/images     (or PODIUM_IMAGE_STORE=/tmp/images)
""",
    "import": """examples:
  podium image import rootfs.tar busybox:latest
  podium image import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' debian.tar.gz podium/python:3
""",
    "load": """examples:
  podium image load busybox.tar              (from podium image save or docker save)
  podium image load --name app:1 oci.tar     (an OCI archive whose image has no name)
""",
    "save": """examples:
  podium image save busybox busybox.tar
  podium image save app:1 app:2 apps.tar
""",
    "pull": """examples:
  podium image pull busybox
  podium image pull 127.0.0.1:5000/team/app:1           (http: a loopback registry)
  podium image pull --insecure registry.lan:5000/app:1   (http to another host)
  echo "$TOKEN" | podium image pull --username ci --password-stdin registry.example/app:1
""",
    "push": """examples:
  podium image push 127.0.0.1:5000/team/app:1
  podium image push app:1 127.0.0.1:5000/team/app:1
  echo "$TOKEN" | podium image push --username ci --password-stdin registry.example/app:1
""",
    "ls": """examples:
  podium image ls
  podium image ls -q                          (IDs only, one each)
  podium image ls --format json
""",
    "inspect": """examples:
  podium image inspect busybox
  podium image inspect busybox | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"])'
""",
    "rm": """examples:
  podium image rm busybox:latest
  podium image rm 1a2b3c4d                     (every name of that image)
  podium image rm $(podium image ls -q)

rm removes names; the blobs and unpacked layers go at the next prune.
""",
    "prune": """examples:
  podium image prune

Removes blobs and unpacked layers that no name and no container reaches, and
partial downloads.
""",
    "tag": """examples:
  podium image tag busybox 127.0.0.1:5000/base/busybox:1
""",
    "build": """examples:
  podium image build -t app:1 .
  podium image build -t app:1 -f docker/Dockerfile --build-arg VERSION=2 .
  podium image build -t app:1 --network host .      (RUN steps may use the network)

RUN steps run in containers of podium's own runtime, with no network unless
--network host; a rebuild with nothing changed takes every step from the cache.
""",
}


def store_option() -> argparse.ArgumentParser:
    """``--store``, taken anywhere on the line (``podium --store D image ls``, ``… ls --store D``).

    Its default is SUPPRESS so that a later parser never resets what an earlier one read.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                   help=f"image store (default: ${STORE_ENV} or /var/lib/podium/images)")
    return p


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``image`` and its commands to the top-level subparsers ``sub``."""
    parents = [common, store_option()]
    group = sub.add_parser("image", help=_HELP, description=_HELP, parents=parents,
                           epilog=_EXAMPLES["image"],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    group.set_defaults(func=None, group_usage=group.format_help)
    commands = group.add_subparsers(dest="command", metavar="COMMAND",
                                    parser_class=type(group))

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help, parents=parents, epilog=_EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=globals()["cmd_" + name])
        return c

    c = command("import", "make a root filesystem tarball a one-layer image")
    c.add_argument("tarball", metavar="ROOTFS.tar[.gz]")
    c.add_argument("name", metavar="NAME[:TAG]")
    c.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="set the config: CMD, ENTRYPOINT, ENV, LABEL, WORKDIR, USER, EXPOSE, "
                        "STOPSIGNAL (Dockerfile syntax; repeatable)")
    c = command("load", "load the images of an OCI or docker-save archive")
    c.add_argument("archive", metavar="ARCHIVE")
    c.add_argument("--name", default=None, help="name for an image the archive leaves unnamed")
    c = command("save", "write images to an OCI archive (docker load reads it too)")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.add_argument("archive", metavar="ARCHIVE")
    for name, help in (("pull", "fetch an image from a registry"),
                       ("push", "send an image to a registry")):
        c = command(name, help)
        c.add_argument("--insecure", action="store_true",
                       help="plain http to a registry that is not on loopback")
        c.add_argument("--username", "-u", default=None)
        c.add_argument("--password-stdin", action="store_true",
                       help="read the password (or token) from standard input")
        c.add_argument("--quiet", "-q", action="store_true", help="no progress")
        if name == "pull":
            c.add_argument("reference", metavar="REF")
        else:
            c.add_argument("name", metavar="NAME")
            c.add_argument("reference", nargs="?", metavar="REF",
                           help="where to push (default: NAME itself)")
    c = command("ls", "list images")
    c.add_argument("--quiet", "-q", action="store_true", help="only the image IDs")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c = command("inspect", "print an image's manifest, config and layers as JSON")
    c.add_argument("name", metavar="NAME")
    c = command("rm", "remove image names (refused while a container uses the image)")
    c.add_argument("names", nargs="+", metavar="NAME")
    command("prune", "remove what no image name or container reaches")
    c = command("build", "build an image from a Dockerfile")
    c.add_argument("context", metavar="CONTEXT", help="the directory COPY and ADD read from")
    c.add_argument("--tag", "-t", default=None, metavar="NAME[:TAG]")
    c.add_argument("--file", "-f", default=None, metavar="DOCKERFILE",
                   help="default: CONTEXT/Dockerfile")
    c.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    c.add_argument("--network", choices=("none", "host"), default="none",
                   help="the RUN steps' network (default: none)")
    c.add_argument("--target", default=None, metavar="STAGE", help="stop at this stage")
    c.add_argument("--no-cache", action="store_true", help="run every step again")
    c.add_argument("--quiet", "-q", action="store_true", help="print only the digest")
    c = command("tag", "give an image another name")
    c.add_argument("source", metavar="SRC")
    c.add_argument("target", metavar="DST")


# --- commands ---------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> None:
    from client.cli.changes import apply_changes
    from runtime.images import import_rootfs, parse_reference

    parse_reference(args.name)  # a bad name fails before the tarball is read
    config = apply_changes(args.change)
    if "Env" in config and not any(e.startswith("PATH=") for e in config["Env"]):
        config["Env"] = [DEFAULT_PATH, *config["Env"]]
    print(import_rootfs(open_store(args), Path(args.tarball), args.name, config or None))


def cmd_load(args: argparse.Namespace) -> None:
    from runtime.images import load_archive, parse_reference

    if args.name is not None:
        parse_reference(args.name)
    archive = Path(args.archive)
    archive.stat()  # a missing file is an OSError that names it, before the store is opened
    for loaded in load_archive(open_store(args), archive, args.name):
        print(loaded)


def cmd_save(args: argparse.Namespace) -> None:
    from runtime.images import save_archive

    store = open_store(args)
    save_archive(store, [find_image(store, n) for n in args.names], Path(args.archive))


def cmd_build(args: argparse.Namespace) -> None:
    from runtime.images import build

    build_args = {}
    for item in args.build_arg:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--build-arg {item!r}: use NAME=VALUE")
        build_args[name] = value

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(build(open_store(args), Path(args.context), dockerfile=args.file, tag=args.tag,
                build_args=build_args, network=args.network,
                progress=None if args.quiet else show, target=args.target,
                no_cache=args.no_cache))


def cmd_pull(args: argparse.Namespace) -> None:
    from runtime.images import parse_reference, pull

    parse_reference(args.reference)
    credentials = read_credentials(args)
    print(pull(open_store(args), args.reference, credentials=credentials,
               insecure=args.insecure, progress=progress(args, "pulling")))


def cmd_push(args: argparse.Namespace) -> None:
    from runtime.images import parse_reference, push

    if args.reference is not None:
        parse_reference(args.reference)
    credentials = read_credentials(args)
    store = open_store(args)
    print(push(store, find_image(store, args.name), args.reference or args.name,
               credentials=credentials, insecure=args.insecure,
               progress=progress(args, "pushing")))


def cmd_ls(args: argparse.Namespace) -> None:
    from runtime.images import parse_reference

    images = open_store(args).list()
    if args.quiet:
        for digest in dict.fromkeys(i.digest for i in images):
            print(short_id(digest))
        return
    rows: list[dict[str, Any]] = []
    for image in images:
        ref = parse_reference(image.name)
        rows.append({"repository": replace(ref, tag=None, digest=None).familiar,
                     "tag": ref.tag or "<none>", "name": image.name, "id": short_id(image.digest),
                     "digest": image.digest, "created": image.created, "size": image.size})
    if args.format == "json":
        print_json(rows)
        return
    table(("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
          [(r["repository"], r["tag"], r["id"], age(r["created"]), human_size(r["size"]))
           for r in rows])


def cmd_inspect(args: argparse.Namespace) -> None:
    store = open_store(args)
    name = find_image(store, args.name)
    digest = store.resolve(name)
    manifest = store.manifest(digest)
    config = json.loads(store.read_blob(manifest.config.digest))
    diff_ids = store.image_config(digest).diff_ids
    layers = []
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        path = store.layer_path(diff_id)
        layers.append({"digest": layer.digest, "mediaType": layer.media_type,
                       "size": layer.size, "diffId": diff_id,
                       "path": str(path) if path.is_dir() else None})
    print_json({
        "id": short_id(digest),
        "digest": digest,
        "names": [i.name for i in store.list() if i.digest == digest],
        "mediaType": manifest.media_type,
        "size": manifest.config.size + sum(layer.size for layer in manifest.layers),
        "config": config,
        "layers": layers,
        "usedBy": store.holders(digest),
    })


def cmd_rm(args: argparse.Namespace) -> int:
    from runtime.images import ImageError, ImageInUse

    store = open_store(args)
    failed = False
    for text in args.names:
        try:
            name = find_image(store, text)
            if not name.startswith("sha256:"):
                print(f"untagged: {store.rm(name)}")
                continue
            # By ID: every name of the image, or none if a container uses it.
            holders = store.holders(name)
            if holders:
                raise ImageInUse(text, holders)
            for image in store.list():
                if image.digest == name:
                    print(f"untagged: {store.rm(image.name)}")
        except ImageError as e:
            sys.stderr.write(f"podium: {one_line(e)}\n")
            failed = True
    return 1 if failed else 0


def cmd_prune(args: argparse.Namespace) -> None:
    report = open_store(args).prune()
    print(f"removed {report.blobs} blobs ({human_size(report.bytes)}) and "
          f"{report.layers} unpacked layers")


def cmd_tag(args: argparse.Namespace) -> None:
    store = open_store(args)
    store.tag(find_image(store, args.source), args.target)


# --- helpers ------------------------------------------------------------------------


def store_root(args: argparse.Namespace) -> Path:
    from runtime.images import DEFAULT_ROOT

    return Path(getattr(args, "store", None) or os.environ.get(STORE_ENV) or DEFAULT_ROOT)


def open_store(args: argparse.Namespace) -> ImageStore:
    from runtime.images import ImageStore

    return ImageStore(store_root(args))


def short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def find_image(store: ImageStore, text: str) -> str:
    """What the store's calls take for ``text``: a name, or the full digest of an ID.

    A name wins over an ID that happens to look like it (``beef`` may be either), as
    in Docker.
    """
    from runtime.images import ImageNotFound, InvalidReference

    try:
        store.resolve(text)
        return text
    except (ImageNotFound, InvalidReference) as e:
        if not _ID.fullmatch(text):
            raise
        miss: Exception = e
    prefix = text if text.startswith("sha256:") else "sha256:" + text
    found = sorted({i.digest for i in store.list() if i.digest.startswith(prefix)})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UsageError(f"image ID {text} is ambiguous: it starts {len(found)} images")
    raise miss


def read_credentials(args: argparse.Namespace) -> Credentials | None:
    from runtime.images import Credentials

    if args.password_stdin and not args.username:
        raise UsageError("--password-stdin needs --username")
    if args.username is None:
        return None
    if not args.password_stdin:
        raise UsageError("--username needs --password-stdin (the password is read from "
                         "standard input, never from the command line)")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: standard input is empty")
    return Credentials(args.username, password)


def progress(args: argparse.Namespace, verb: str) -> Any:
    """A bar per layer when stderr is a terminal; None with ``--quiet`` or off a
    terminal, so ``2>log`` and scripts get only the result on stdout."""
    from client.cli.style import StatusLine

    if args.quiet or not StatusLine(sys.stderr).enabled:
        return None
    from runtime.images import TextProgress

    return TextProgress(sys.stderr, verb=verb)
