"""podium's client room: the Python client library and the ``podium`` command line.

    from client import Client                 the scheduler's API, typed (``client.api``)
    podium get pods / apply -f …              kubectl's verbs (``client.cli``)
    podium image ls                           node-local image commands (``client.cli.image``)

The image commands work on the node's image store directly through
``runtime.images``, under the store's file locks, so no daemon is needed; the
cluster verbs talk to the scheduler over gRPC through ``Client``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.api import (
        ApplyResult,
        Client,
        ClientError,
        ExecResult,
        NotFound,
        ServerError,
        Unreachable,
        kind_info,
        ref,
        unwrap,
        wrap,
    )


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``podium --help`` and the image commands
    # do not load gRPC.
    if name in __all__:
        from client import api

        return getattr(api, name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")


__all__ = [
    "ApplyResult",
    "Client",
    "ClientError",
    "ExecResult",
    "NotFound",
    "ServerError",
    "Unreachable",
    "kind_info",
    "ref",
    "unwrap",
    "wrap",
]
