"""Which program a container runs: Kubernetes' rules for command/args over the image.

| container command | container args | runs                         |
| ----------------- | -------------- | ---------------------------- |
| —                 | —              | image Entrypoint + image Cmd |
| set               | —              | command (image's both unused)|
| —                 | set            | image Entrypoint + args      |
| set               | set            | command + args               |

An empty list counts as not set, as in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.images.errors import ProcessArgsError


def resolve_process_args(
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
) -> list[str]:
    """The argv of the container's process; ProcessArgsError when it would be empty."""
    if command:
        argv = list(command) + list(args or ())
    elif args:
        argv = list(entrypoint or ()) + list(args)
    else:
        argv = list(entrypoint or ()) + list(cmd or ())
    if not argv:
        raise ProcessArgsError(
            "no command to run: the image has no Entrypoint or Cmd and the container "
            "gives no command"
        )
    return argv
