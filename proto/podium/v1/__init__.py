"""podium's API objects and services (package ``podium.v1``), generated from the
``.proto`` files beside this module by ``python -m proto.generate``.

Messages live in ``<file>_pb2`` (``from proto.podium.v1 import pod_pb2``),
services in ``<file>_pb2_grpc`` (``agent_pb2_grpc.AgentServiceStub``).
"""
