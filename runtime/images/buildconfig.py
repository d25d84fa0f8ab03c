"""A build stage's image as it grows, and the instructions that change only its config.

A ``Stage`` holds the image config document (kept as JSON, so fields podium does
not model survive), the layer descriptors, and the step cache key so far.
``apply_config_step`` does ENV, ARG, LABEL, EXPOSE, CMD, ENTRYPOINT, SHELL, VOLUME,
STOPSIGNAL, MAINTAINER, USER and WORKDIR's config part; each returns the
instruction's text after substitution, which goes into the image history and the
cache key. No I/O happens here.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from runtime.images.dockerfile import Instruction
from runtime.images.oci import Descriptor
from runtime.images.shellwords import expand

DEFAULT_SHELL = ("/bin/sh", "-c")
_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?\Z", re.IGNORECASE)


class StepError(ValueError):
    """An instruction that cannot be applied; the message says why (the caller adds the step)."""


@dataclass
class BuildArgs:
    """``--build-arg`` values, the ARGs declared before the first FROM, and which were used."""

    given: dict[str, str]
    global_defaults: dict[str, str | None] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def value(self, name: str, default: str | None) -> str | None:
        if name in self.given:
            self.used.add(name)
            return self.given[name]
        if default is not None:
            return default
        return self.global_defaults.get(name)


@dataclass
class Stage:
    name: str  # "AS name", or the stage's index as text
    config: dict[str, Any]  # the image config document
    layers: list[Descriptor]
    key: str  # the step cache key so far
    args: dict[str, str] = field(default_factory=dict)  # ARGs declared in this stage
    cmd_set: bool = False  # CMD given in this stage (ENTRYPOINT then keeps it)
    created: str = ""

    @property
    def cfg(self) -> dict[str, Any]:
        section = self.config.get("config")
        if not isinstance(section, dict):
            section = self.config["config"] = {}
        return section

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.cfg.get("Env") or []:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out

    def variables(self) -> dict[str, str]:
        """What ``$NAME`` means in this stage: its ARGs, overridden by its ENV."""
        return {**self.args, **self.env()}

    def run_env(self) -> list[str]:
        """A RUN's environment: the image's Env plus ARGs that no ENV overrides."""
        env = self.env()
        return [f"{k}={v}" for k, v in env.items()] + [
            f"{k}={v}" for k, v in self.args.items() if k not in env]

    def diff_ids(self) -> list[str]:
        rootfs = self.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        ids = rootfs.setdefault("diff_ids", [])
        assert isinstance(ids, list)
        return ids

    def shell(self) -> list[str]:
        shell = self.cfg.get("Shell")
        return list(shell) if isinstance(shell, list) and shell else list(DEFAULT_SHELL)

    def add_history(self, created_by: str, created: str, empty_layer: bool) -> None:
        entry: dict[str, Any] = {"created": created, "created_by": created_by,
                                 "comment": "podium build"}
        if empty_layer:
            entry["empty_layer"] = True
        self.config.setdefault("history", []).append(entry)
        self.created = created

    def add_layer(self, layer: Descriptor, diff_id: str) -> None:
        self.layers.append(layer)
        self.diff_ids().append(diff_id)

    def fork(self, name: str) -> Stage:
        """A new stage starting from this one's image (``FROM earlier-stage``)."""
        return Stage(name=name, config=copy.deepcopy(self.config), layers=list(self.layers),
                     key=self.key, created=self.created)


def command_words(stage: Stage, ins: Instruction) -> list[str]:
    """RUN, CMD, ENTRYPOINT as argv: the exec form as given, the shell form via SHELL."""
    if ins.exec_form:
        return list(ins.words)
    return [*stage.shell(), ins.text]


def apply_config_step(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    """Apply a config-only instruction to ``stage``; its text after substitution."""
    handler = _HANDLERS.get(ins.keyword)
    if handler is None:
        raise StepError(f"{ins.keyword} does not only change the config")
    return handler(stage, ins, escape, args)


def _x(stage: Stage, word: str, escape: str, env: dict[str, str] | None = None) -> str:
    try:
        return expand(word, stage.variables() if env is None else env, escape)
    except ValueError as e:
        raise StepError(str(e)) from None


def _env(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    before = stage.variables()  # every pair sees the values from before this line
    env = stage.env()
    shown = []
    for key, value in ins.pairs:
        name, val = _x(stage, key, escape, before), _x(stage, value or "", escape, before)
        env[name] = val
        shown.append(f"{name}={val}")
    stage.cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
    return "ENV " + " ".join(shown)


def _arg(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    shown = []
    for name, default in ins.pairs:
        value = args.value(name, _x(stage, default, escape) if default is not None else None)
        if value is not None:
            stage.args[name] = value
            shown.append(f"{name}={value}")
        else:
            shown.append(name)
    return "ARG " + " ".join(shown)


def _label(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    labels = dict(stage.cfg.get("Labels") or {})
    shown = []
    for key, value in ins.pairs:
        k, v = _x(stage, key, escape), _x(stage, value or "", escape)
        labels[k] = v
        shown.append(f"{k}={json.dumps(v)}")
    stage.cfg["Labels"] = labels
    return "LABEL " + " ".join(shown)


def _expose(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    ports = dict(stage.cfg.get("ExposedPorts") or {})
    shown = []
    for word in ins.words:
        for port in _x(stage, word, escape).split():
            match = _PORT.match(port)
            if match is None or not 0 < int(match.group(1)) <= 65535:
                raise StepError(f"invalid port {port!r}: want PORT[/tcp|udp|sctp]")
            proto = (match.group(3) or "tcp").lower()
            spec = f"{match.group(1)}{'-' + match.group(2) if match.group(2) else ''}/{proto}"
            ports[spec] = {}
            shown.append(spec)
    stage.cfg["ExposedPorts"] = ports
    return "EXPOSE " + " ".join(shown)


def _cmd(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    words = command_words(stage, ins)
    if ins.keyword == "CMD":
        stage.cfg["Cmd"] = words
        stage.cmd_set = True
    else:
        stage.cfg["Entrypoint"] = words
        if not stage.cmd_set:
            stage.cfg["Cmd"] = None  # an inherited CMD does not fit a new ENTRYPOINT
    return f"{ins.keyword} {json.dumps(words)}"


def _shell(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    stage.cfg["Shell"] = list(ins.words)
    return f"SHELL {json.dumps(list(ins.words))}"


def _volume(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    volumes = dict(stage.cfg.get("Volumes") or {})
    paths = [_x(stage, w, escape) for w in ins.words]
    for path in paths:
        if not path:
            raise StepError("a volume path is empty")
        volumes[path] = {}
    stage.cfg["Volumes"] = volumes
    return f"VOLUME {json.dumps(paths)}"


def _stopsignal(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    stage.cfg["StopSignal"] = _x(stage, ins.text, escape)
    return f"STOPSIGNAL {stage.cfg['StopSignal']}"


def _maintainer(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    stage.config["author"] = ins.text
    return f"MAINTAINER {ins.text}"


def _user(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    user = _x(stage, ins.text, escape)
    if not user:
        raise StepError("the user is empty")
    stage.cfg["User"] = user
    return f"USER {user}"


def workdir_path(stage: Stage, ins: Instruction, escape: str) -> str:
    """The absolute directory a WORKDIR names (relative to the previous one)."""
    path = _x(stage, ins.text, escape)
    if not path:
        raise StepError("the directory is empty")
    base = str(stage.cfg.get("WorkingDir") or "/")
    return posixpath.normpath(posixpath.join(base, path)).replace("//", "/")


def _workdir(stage: Stage, ins: Instruction, escape: str, args: BuildArgs) -> str:
    path = workdir_path(stage, ins, escape)
    stage.cfg["WorkingDir"] = path
    return f"WORKDIR {path}"


_HANDLERS = {
    "ENV": _env, "ARG": _arg, "LABEL": _label, "EXPOSE": _expose, "CMD": _cmd,
    "ENTRYPOINT": _cmd, "SHELL": _shell, "VOLUME": _volume, "STOPSIGNAL": _stopsignal,
    "MAINTAINER": _maintainer, "USER": _user, "WORKDIR": _workdir,
}
