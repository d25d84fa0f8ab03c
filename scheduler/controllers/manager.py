"""Runs every controller, each in a thread of its own.

    manager = ControllerManager(cluster, leases)
    manager.start()          # or manager.run(stop), which blocks until stop
    ...
    manager.close()          # stops and joins the threads

A controller that raises is logged and carries on; it never stops the
others.
"""

from __future__ import annotations

import logging
import threading

from scheduler.cluster import Cluster
from scheduler.controllers.base import Controller
from scheduler.controllers.deployment import DeploymentController
from scheduler.controllers.endpoints import EndpointsController
from scheduler.controllers.gc import GarbageCollector
from scheduler.controllers.leases import Leases
from scheduler.controllers.nodelifecycle import NodeLifecycleController
from scheduler.controllers.replicaset import ReplicaSetController

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


class ControllerManager:
    def __init__(self, cluster: Cluster, leases: Leases, node_grace: float = 5.0,
                 eviction_timeout: float = 5.0) -> None:
        self.controllers: list[Controller] = [
            ReplicaSetController(cluster),
            DeploymentController(cluster),
            NodeLifecycleController(cluster, leases, node_grace, eviction_timeout),
            GarbageCollector(cluster),
            EndpointsController(cluster),
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        for controller in self.controllers:
            thread = threading.Thread(target=self._keep_running, args=(controller,),
                                      name=f"controller-{controller.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _keep_running(self, controller: Controller) -> None:
        while not self._stop.is_set():
            try:
                controller.run(self._stop)
            except Exception:
                log.exception("controller %s stopped with an error; restarting it",
                              controller.name)
                self._stop.wait(RESTART_DELAY)

    def run(self, stop: threading.Event) -> None:
        """Starts the controllers, blocks until `stop` is set, then closes."""
        self.start()
        try:
            while not stop.wait(0.2) and not self._stop.is_set():
                pass
        finally:
            self.close()

    def step(self) -> None:
        """One pass of every controller in turn (tests; no threads)."""
        for controller in self.controllers:
            controller.step()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()
        for controller in self.controllers:
            controller.close()
