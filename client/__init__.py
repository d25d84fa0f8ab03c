"""podium's client room: the ``podium`` command line (and, later, the Python client library).

    podium image ls                    node-local image commands (``client.cli.image``)

The image commands work on the node's image store directly through
``runtime.images``, under the store's file locks, so no daemon is needed; the
cluster verbs (``get``, ``apply`` …) will talk to the scheduler over gRPC.
"""
