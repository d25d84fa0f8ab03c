"""``build``: a Dockerfile and its context become an OCI image in the store.

    digest = build(store, "app/", tag="app:1", build_args={"V": "2"}, progress=print)

Each instruction is one step, numbered as Docker numbers them (``Step 3/7: RUN …``):

- FROM starts a stage from an image in the store (a multi-arch index resolves to
  this machine's platform), from ``scratch``, or from an earlier stage (``AS name``).
- RUN executes in a container by podium's own runtime (``buildrun``) over the
  image's layers; the overlay upper dir it leaves is the step's layer (``layerdiff``).
- COPY and ADD put context files (or an earlier stage's, ``--from``) into a layer
  without running anything (``buildcopy``); ADD also fetches URLs and unpacks
  local tar archives (``buildfetch``).
- WORKDIR makes a layer only if its directory is missing; the other instructions
  change only the image config (``buildconfig``).

Every step first asks the step cache (``buildcache``); a hit reuses the step's layer
and timestamp, so an unchanged rebuild runs no container and gives the same digest.
A failing step raises ``BuildError`` naming the step; nothing of it stays behind
(its container is deleted, its scratch directory removed), while the steps before
it stay cached.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import RuntimeError_
from runtime.images import layers as _layers
from runtime.images.buildcache import SCRATCH_KEY, BuildCache, CacheEntry, step_key
from runtime.images.buildconfig import (
    BuildArgs,
    Stage,
    StepError,
    apply_config_step,
    command_words,
    workdir_path,
)
from runtime.images.buildcopy import (
    ContextTree,
    CopyError,
    SourceTree,
    ViewTree,
    entries_digest,
    missing_dirs,
    plan_copy,
    write_copy_layer,
)
from runtime.images.buildfetch import FetchError, plan_add
from runtime.images.dockerfile import Dockerfile, Instruction, parse
from runtime.images.dockerignore import IgnoreRules
from runtime.images.errors import ImageError
from runtime.images.imageview import ImageView, parse_passwd_user
from runtime.images.layerdiff import LayerWriter, add_upper, store_layer
from runtime.images.oci import (
    DOCKER_LAYER_GZIP,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    canonical_json,
    host_platform,
    kind_of,
    manifest_json,
    parse_index,
    select_platform,
)
from runtime.images.reference import parse_reference
from runtime.images.shellwords import WordError, expand
from runtime.images.store import ImageStore
from runtime.images.unpack import remove_tree

if TYPE_CHECKING:
    from runtime.api import Runtime

DEFAULT_CGROUP_PARENT = "podium-build"
NETWORKS = ("none", "host")
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


class BuildError(ImageError):
    """A build that failed; ``step`` is "Step 3/7: RUN …", ``output`` the RUN's last lines."""

    def __init__(self, step: str, problem: str, exit_code: int | None = None,
                 output: tuple[str, ...] = ()) -> None:
        self.step = step
        self.exit_code = exit_code
        self.output = output
        message = f"{step}: {problem}"
        if output:
            message += " (last output: " + " | ".join(output[-5:]) + ")"
        super().__init__(message)


def build(
    store: ImageStore,
    context_dir: Path | str,
    dockerfile: Path | str | None = None,
    tag: str | None = None,
    build_args: Mapping[str, str] | None = None,
    network: str = "none",
    progress: Progress | None = None,
    *,
    target: str | None = None,
    no_cache: bool = False,
    runtime_root: Path | None = None,
    cgroup_parent: str = DEFAULT_CGROUP_PARENT,
) -> str:
    """Build the image; its manifest digest. ``tag`` names it in the store (else unnamed).

    ``dockerfile`` defaults to ``context_dir/Dockerfile``; ``network`` is "none" (RUN gets
    an empty network namespace) or "host"; ``progress`` receives one line at a time;
    ``target`` picks a stage by name (default: the last); ``runtime_root`` and
    ``cgroup_parent`` place RUN's containers (default: under the store's root, and
    ``podium-build``).
    """
    context = Path(context_dir)
    if not context.is_dir():
        raise BuildError("build", f"context {context}: no such directory")
    path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError("build", f"cannot read the Dockerfile {path}: {e}") from None
    if network not in NETWORKS:
        raise BuildError("build", f"network {network!r}: want one of {', '.join(NETWORKS)}")
    name = str(parse_reference(tag)) if tag else None  # a bad name fails before any work
    parsed = parse(text, str(path))
    builder = _Builder(store, context, parsed, dict(build_args or {}), network,
                       progress or (lambda _line: None), no_cache,
                       runtime_root or store.root / "build-runtime", cgroup_parent)
    with store.writing():
        final = builder.run(target)
        digest, size = builder.commit(final)
        if name is not None:
            store.set_name(name, Descriptor(OCI_MANIFEST, digest, size))
    builder.say(f"Successfully built {digest}" + (f" as {name}" if name else ""))
    return digest


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Builder:
    def __init__(self, store: ImageStore, context: Path, parsed: Dockerfile,
                 build_args: dict[str, str], network: str, progress: Progress,
                 no_cache: bool, runtime_root: Path, cgroup_parent: str) -> None:
        self.store = store
        self.context = context
        self.parsed = parsed
        self.escape = parsed.escape
        self.args = BuildArgs(given=build_args)
        self.network = network
        self.say = progress
        self.no_cache = no_cache
        self.runtime_root = runtime_root
        self.cgroup_parent = cgroup_parent
        self.cache = BuildCache(store)
        self.context_tree = ContextTree(context, IgnoreRules.read(context))
        self.stages: list[Stage] = []
        self.scratch_root = store.root / "build-tmp"
        self._runtime: Runtime | None = None

    # --- the steps -------------------------------------------------------------------

    def run(self, target: str | None) -> Stage:
        total = len(self.parsed.instructions)
        stage: Stage | None = None
        for number, ins in enumerate(self.parsed.instructions, start=1):
            label = f"Step {number}/{total}: {ins}"
            self.say(label)
            try:
                if ins.keyword == "FROM":
                    stage = self._from(ins)
                    self.stages.append(stage)
                elif stage is None:
                    self._global_arg(ins)
                elif ins.keyword == "RUN":
                    self._run(stage, ins, label)
                elif ins.keyword in ("COPY", "ADD"):
                    self._copy(stage, ins)
                elif ins.keyword == "WORKDIR":
                    self._workdir(stage, ins)
                else:
                    self._config_step(stage, ins)
            except BuildError:
                raise
            except (StepError, CopyError, FetchError, WordError, LookupError, RuntimeError_,
                    OSError) as e:
                raise BuildError(label, _reason(e)) from None
        unused = sorted(set(self.args.given) - self.args.used)
        if unused:
            self.say(f"[warning] build args not used by any ARG: {', '.join(unused)}")
        return self._target(target)

    def _target(self, target: str | None) -> Stage:
        if target is None:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target:
                return stage
        raise BuildError("build", f"target stage {target!r} not found in the Dockerfile")

    def _global_arg(self, ins: Instruction) -> None:
        for name, default in ins.pairs:
            value = self.args.value(name, expand(default, self._global_vars(), self.escape)
                                    if default is not None else None)
            self.args.global_defaults[name] = value

    def _global_vars(self) -> dict[str, str]:
        return {k: v for k, v in self.args.global_defaults.items() if v is not None}

    def _from(self, ins: Instruction) -> Stage:
        image = expand(ins.words[0], self._global_vars(), self.escape)
        name = ins.words[2] if len(ins.words) == 3 else str(len(self.stages))
        platform = ins.flag("platform")
        if platform and platform != str(host_platform()):
            raise StepError(f"--platform={platform}: podium builds for this machine's "
                            f"platform only ({host_platform()})")
        for earlier in self.stages:
            if earlier.name == image:
                return earlier.fork(name)
        if image.lower() == "scratch":
            plat = host_platform()
            config: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os,
                                      "config": {"Env": [_DEFAULT_PATH]},
                                      "rootfs": {"type": "layers", "diff_ids": []},
                                      "history": []}
            return Stage(name=name, config=config, layers=[], key=SCRATCH_KEY)
        digest = self._resolve_image(image)
        manifest = self.store.manifest(digest)
        config = json.loads(self.store.read_blob(manifest.config.digest))
        for stale in ("container", "container_config", "docker_version"):
            config.pop(stale, None)  # they describe how the base was built, not this image
        self.store.lower_dirs(digest)  # unpack the base's layers now, once
        layers = [Descriptor(OCI_LAYER_GZIP if d.media_type == DOCKER_LAYER_GZIP
                             else d.media_type, d.digest, d.size) for d in manifest.layers]
        self.say(f" ---> {digest}")
        return Stage(name=name, config=config, layers=layers, key=step_key("", f"FROM {digest}"))

    def _resolve_image(self, image: str) -> str:
        digest = self.store.resolve(image)
        data = self.store.read_blob(digest)
        if kind_of(data, "", f"image {image}") in INDEX_TYPES:
            digest = select_platform(parse_index(data, image), host_platform(), image).digest
        return digest

    def _config_step(self, stage: Stage, ins: Instruction) -> None:
        text = apply_config_step(stage, ins, self.escape, self.args)
        key = step_key(stage.key, text)
        entry = None if self.no_cache else self.cache.get(key)
        if entry is None:
            entry = CacheEntry(created=_now())
            self.cache.put(key, entry)
        if ins.keyword != "ARG":  # as Docker: an ARG leaves no trace in the history
            stage.add_history(text, entry.created, empty_layer=True)
        stage.key = key

    def _workdir(self, stage: Stage, ins: Instruction) -> None:
        path = workdir_path(stage, ins, self.escape)
        missing = missing_dirs(self._view(stage), path)
        if not missing:
            self._config_step(stage, ins)
            return
        text = apply_config_step(stage, ins, self.escape, self.args)
        key = step_key(stage.key, text, "mkdir")
        if self._from_cache(stage, key, text):
            return
        view = self._view(stage)
        with self._scratch() as scratch:
            self._commit_layer(stage, key, text, scratch, lambda w: write_copy_layer(
                w, [], view, new_dirs=tuple(missing), mtime=datetime.now(UTC).timestamp()))

    def _run(self, stage: Stage, ins: Instruction, label: str) -> None:
        from runtime.images.buildrun import RunSpec, drop_mount_points, run_step
        from runtime.spec.model import User

        argv = command_words(stage, ins)
        text = "RUN " + (json.dumps(argv) if ins.exec_form else " ".join(argv))
        env = stage.run_env()
        user = str(stage.cfg.get("User") or "")
        cwd = str(stage.cfg.get("WorkingDir") or "/")
        network = self._run_network(ins)
        extra = json.dumps({"env": env, "user": user, "cwd": cwd, "network": network})
        key = step_key(stage.key, text, extra)
        if self._from_cache(stage, key, text):
            return
        view = self._view(stage)
        uid, gid, groups = parse_passwd_user(view, user) if user else (0, 0, ())
        spec = RunSpec(args=tuple(argv), env=tuple(env), cwd=cwd, network=network,
                       user=User(uid=uid, gid=gid, additional_gids=groups))
        with self._scratch() as scratch:
            result = run_step(self._get_runtime(), spec, self._lower(stage), scratch, self.say)
            if result.exit_code != 0:
                raise BuildError(label, f"the command returned exit code {result.exit_code}",
                                 result.exit_code, result.tail)
            upper = scratch / "upper"
            drop_mount_points(upper, lambda name: view.lookup(name) is not None)
            self._commit_layer(stage, key, text, scratch, lambda w: add_upper(w, upper))

    def _run_network(self, ins: Instruction) -> str:
        wanted = ins.flag("network", "default")
        if wanted == "default":
            return self.network
        if wanted == "none":
            return "none"
        if wanted == "host" and self.network == "host":
            return "host"
        if wanted == "host":
            raise StepError("--network=host needs the build's host network (network='host')")
        raise StepError(f"--network={wanted}: want default, none or host")

    def _copy(self, stage: Stage, ins: Instruction) -> None:
        vars_ = stage.variables()
        words = [expand(w, vars_, self.escape) for w in ins.words]
        sources, dest = words[:-1], words[-1]
        view = self._view(stage)
        chown, chmod = ins.flag("chown"), ins.flag("chmod")
        uid, gid = parse_passwd_user(view, chown)[:2] if chown else (0, 0)
        mode = _mode(chmod) if chmod else None
        workdir = str(stage.cfg.get("WorkingDir") or "/")
        flags = "".join(f"--{k}={v} " for k, v in ins.flags)
        text = f"{ins.keyword} {flags}{' '.join(words)}"
        with self._scratch() as scratch:
            if ins.keyword == "ADD":
                entries = plan_add(self.context_tree, sources, dest, workdir, view, scratch,
                                   ins.flag("checksum"), (uid, gid, mode, bool(chown)))
            else:
                tree = self._source_tree(ins.flag("from"))
                entries = plan_copy(tree, sources, dest, workdir, view, uid=uid, gid=gid,
                                    mode=mode)
            key = step_key(stage.key, text, entries_digest(entries))
            if self._from_cache(stage, key, text):
                return
            self._commit_layer(stage, key, text, scratch,
                               lambda w: write_copy_layer(w, entries, view))

    def _source_tree(self, from_: str) -> SourceTree:
        if not from_:
            return self.context_tree
        for stage in self.stages[:-1]:
            if stage.name == from_:
                return ViewTree(self._view(stage))
        # Not a stage: an image in the store, as Docker allows.
        digest = self._resolve_image(from_)
        return ViewTree(ImageView(self.store.lower_dirs(digest)))

    # --- layers, cache, scratch ---------------------------------------------------------

    def _from_cache(self, stage: Stage, key: str, text: str) -> bool:
        entry = None if self.no_cache else self.cache.get(key)
        if entry is None:
            return False
        if entry.layer is not None:
            _layers.ensure_layer(self.store, entry.layer, entry.diff_id)
            stage.add_layer(entry.layer, entry.diff_id)
        stage.add_history(text, entry.created, empty_layer=entry.layer is None)
        stage.key = key
        self.say(" ---> Using cache")
        return True

    def _commit_layer(self, stage: Stage, key: str, text: str, scratch: Path,
                      fill: Callable[[LayerWriter], None]) -> None:
        tar = scratch / "layer.tar"
        writer = LayerWriter(tar)
        try:
            fill(writer)
        finally:
            writer.close()
        entry = CacheEntry(created=_now())
        if writer.count:
            layer, diff_id = store_layer(self.store, tar, text[:60])
            entry = entry._replace(layer=layer, diff_id=diff_id)
            stage.add_layer(layer, diff_id)
            self.say(f" ---> layer {_layers.short(diff_id)}")
        stage.add_history(text, entry.created, empty_layer=entry.layer is None)
        self.cache.put(key, entry)
        stage.key = key

    def _view(self, stage: Stage) -> ImageView:
        return ImageView(self._lower(stage))

    def _lower(self, stage: Stage) -> list[Path]:
        return [self.store.layer_path(d) for d in reversed(stage.diff_ids())]

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A private directory on the store's file system for one step, always removed."""
        self.scratch_root.mkdir(mode=0o700, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="step-", dir=self.scratch_root))
        try:
            yield path
        finally:
            remove_tree(path)
            try:
                self.scratch_root.rmdir()
            except OSError:
                pass  # another build is using it

    def _get_runtime(self) -> Runtime:
        if self._runtime is None:
            from runtime.api import Runtime

            self._runtime = Runtime(root=self.runtime_root, cgroup_parent=self.cgroup_parent)
        return self._runtime

    def commit(self, stage: Stage) -> tuple[str, int]:
        """Store the stage's config and manifest; the manifest's digest and size."""
        config = stage.config
        config["created"] = stage.created or _now()
        config_bytes = canonical_json(config)
        config_digest = self.store.put_blob(config_bytes)
        manifest = manifest_json(Descriptor(OCI_CONFIG, config_digest, len(config_bytes)),
                                 list(stage.layers))
        return self.store.put_blob(manifest), len(manifest)


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise StepError(f"--chmod={text}: not an octal mode") from None
    if not 0 <= mode <= 0o7777:
        raise StepError(f"--chmod={text}: out of range")
    return mode


def _reason(e: BaseException) -> str:
    if isinstance(e, LookupError) and e.args:
        return str(e.args[0])
    return str(e)
