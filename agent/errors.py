"""The agent's exceptions, one tree so callers can catch at the depth they need.

    AgentError (base: every error the agent raises on purpose)
    └── NetworkError              a pod sandbox's network could not be set up or torn down
        ├── AddressExhaustedError the node's pod CIDR has no free address left
        └── PortConflictError     a hostPort is already published for another pod

Every message says what went wrong and where, on one line.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class NetworkError(AgentError):
    pass


class AddressExhaustedError(NetworkError):
    pass


class PortConflictError(NetworkError):
    pass
