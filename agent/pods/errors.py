"""The pod room's exceptions (under ``agent.errors.AgentError``).

    AgentError
    └── PodError                  a pod could not be made, run or removed
        └── PodSpecError          a field of the Pod cannot be honoured; .field names it

Messages are one line: ``spec.containers[1].resources.limits.memory: "12Zi" is not a
quantity``.
"""

from __future__ import annotations

from agent.errors import AgentError


class PodError(AgentError):
    pass


class PodSpecError(PodError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
