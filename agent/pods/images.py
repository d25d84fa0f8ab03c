"""Getting a container's image onto the node: imagePullPolicy, pulls, pull back-off.

    pull_policy(container)   the container's policy, or Kubernetes' default for its image:
                             Always for ``:latest`` or no tag, IfNotPresent otherwise
    ImagePuller              pulls on threads of their own (a pull can take minutes, the
                             pod loop must not wait), one at a time per image however
                             many containers want it; shared by every worker of the node
    ImageFetch               one container's way to its image, step by step: whether to
                             pull, the pull under way, ErrImagePull then ImagePullBackOff
                             with the restart back-off's delays, ErrImageNeverPull

A container waits while its image is pulled (with the default waiting reason,
ContainerCreating or PodInitializing, as the kubelet shows it); the worker starts it
on the first sync after the pull succeeded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from proto.podium.v1 import pod_pb2

log = logging.getLogger("podium.agent")

ALWAYS = "Always"
IF_NOT_PRESENT = "IfNotPresent"
NEVER = "Never"
PULL_POLICIES = (ALWAYS, IF_NOT_PRESENT, NEVER)

Waiting = tuple[str, str]  # (reason, message) a container waits with
Spawn = Callable[[Callable[[], None]], None]


@runtime_checkable
class ImagePulls(Protocol):
    """An image source that can also pull (``agent.pods.host.StoreImages`` is one)."""

    def present(self, image: str) -> bool: ...
    def pull(self, image: str) -> str: ...


def pull_policy(container: pod_pb2.Container) -> str:
    """``imagePullPolicy``, or the default the API server would have filled in."""
    if container.image_pull_policy:
        return container.image_pull_policy
    image = container.image
    if "@" in image:
        return IF_NOT_PRESENT  # a digest never changes
    slash, colon = image.rfind("/"), image.rfind(":")
    tag = image[colon + 1:] if colon > slash else ""
    return ALWAYS if tag in ("", "latest") else IF_NOT_PRESENT


def image_key(image: str) -> str:
    """One name per image however it is written: ``busybox`` is
    ``docker.io/library/busybox:latest``."""
    from runtime.images import InvalidReference, normalize

    try:
        return normalize(image)
    except InvalidReference:
        return image


def _thread(task: Callable[[], None]) -> None:
    threading.Thread(target=task, name="podium-pull", daemon=True).start()


@dataclass
class PullTicket:
    """One pull under way or done; every container that wants the image shares it."""

    image: str
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""
    name: str = ""  # what the store named it, once pulled


class ImagePuller:
    def __init__(self, pull: Callable[[str], str], spawn: Spawn = _thread) -> None:
        self._pull = pull
        self._spawn = spawn
        self._lock = threading.Lock()
        self._pulling: dict[str, PullTicket] = {}

    def pull(self, image: str) -> PullTicket:
        """The pull of ``image`` under way, or a new one."""
        key = image_key(image)
        with self._lock:
            ticket = self._pulling.get(key)
            if ticket is not None:
                return ticket
            ticket = self._pulling[key] = PullTicket(image)
        log.info("pulling image %s", image)
        self._spawn(lambda: self._run(key, ticket))
        return ticket

    def _run(self, key: str, ticket: PullTicket) -> None:
        try:
            ticket.name = self._pull(ticket.image)
            log.info("pulled image %s", ticket.image)
        except Exception as e:  # noqa: BLE001 - any failure is the container's ErrImagePull
            ticket.error = f'failed to pull image "{ticket.image}": {e or type(e).__name__}'
            log.warning("%s", ticket.error)
        finally:
            with self._lock:
                if self._pulling.get(key) is ticket:
                    del self._pulling[key]
            ticket.done.set()


@dataclass
class ImageFetch:
    """One container's image, from policy to a start; the worker keeps one per container."""

    failures: int = 0  # pulls failed in a row
    retry_at: float = 0.0  # clock: no new pull before
    error: str = ""  # the last pull's failure
    ticket: PullTicket | None = None
    pulled: bool = False  # a pull succeeded for the next start (what Always asks)

    def check(self, image: str, policy: str, present: Callable[[str], bool],
              puller: ImagePuller | None, now: float, delay: Callable[[int], float],
              ) -> Waiting | None:
        """None: start the container now; else why it waits. Never blocks.

        ``delay(n)`` is the back-off after the n-th failure in a row (the restart
        back-off's: 10 s doubling to 5 min).
        """
        from runtime.images import InvalidReference, parse_reference

        try:
            parse_reference(image)
        except InvalidReference as e:
            return "InvalidImageName", f'Failed to apply default image tag "{image}": {e}'
        if self.ticket is not None:
            ticket = self.ticket
            if not ticket.done.is_set():
                return "", f'pulling image "{image}"'  # the default reason: still creating
            self.ticket = None
            if ticket.error:
                self.failures += 1
                self.retry_at = now + delay(self.failures)
                self.error = ticket.error
                return "ErrImagePull", ticket.error
            self.failures, self.error, self.pulled = 0, "", True
            return None
        if policy == NEVER:
            if present(image):
                return None
            return ("ErrImageNeverPull",
                    f'Container image "{image}" is not present with pull policy of Never')
        if puller is None or self.pulled or (policy == IF_NOT_PRESENT and present(image)):
            return None  # without a puller the start itself says the image is missing
        if self.failures and now < self.retry_at:
            return "ImagePullBackOff", f'Back-off pulling image "{image}": {self.error}'
        self.ticket = puller.pull(image)
        return self.check(image, policy, present, puller, now, delay)

    def used(self) -> None:
        """The container started from the image: Always pulls again before the next start."""
        self.pulled = False
