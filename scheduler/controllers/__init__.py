"""Controllers: the loops that make the cluster what its objects ask for.

Each controller is a pure decision over a snapshot (`plan_*`: objects in,
actions out) and a thin runner (a `Controller`: a cache kept by one watch, a
queue of keys, `step()` for tests and `run(stop)` for a thread).

    ReplicaSetController     spec.replicas pods of a template
    DeploymentController     rolls templates out through ReplicaSets
    NodeLifecycleController  silent nodes → NotReady → pods evicted
    EndpointsController      each Service's ready pods; LoadBalancer ingress
    GarbageCollector         objects whose owners are gone
    ControllerManager        all of them, one thread each

Errors: RolloutError (RollbackError, RolloutFailed) from the rollout helpers
the CLI uses; the runners log failures and retry, never raise.
"""

from scheduler.controllers.actions import Action, Create, Delete, Emit, Plan, Update, UpdateStatus
from scheduler.controllers.base import Controller, WorkQueue
from scheduler.controllers.deployment import DeploymentController, plan_deployment
from scheduler.controllers.endpoints import EndpointsController, plan_service
from scheduler.controllers.gc import GarbageCollector, plan_gc
from scheduler.controllers.informer import Informer, Notice
from scheduler.controllers.leases import Leases
from scheduler.controllers.manager import ControllerManager
from scheduler.controllers.nodelifecycle import NodeLifecycleController, plan_nodes
from scheduler.controllers.replicaset import ReplicaSetController, plan_replica_set
from scheduler.controllers.rollout import (
    HASH_LABEL,
    REVISION_ANNOTATION,
    RollbackError,
    RolloutError,
    RolloutFailed,
    rollback_template,
    rollout_complete,
    rollout_history,
    template_hash,
)

__all__ = [
    "HASH_LABEL",
    "REVISION_ANNOTATION",
    "Action",
    "Controller",
    "ControllerManager",
    "Create",
    "Delete",
    "DeploymentController",
    "EndpointsController",
    "Emit",
    "GarbageCollector",
    "Informer",
    "Leases",
    "NodeLifecycleController",
    "Notice",
    "Plan",
    "ReplicaSetController",
    "RollbackError",
    "RolloutError",
    "RolloutFailed",
    "Update",
    "UpdateStatus",
    "WorkQueue",
    "plan_deployment",
    "plan_gc",
    "plan_nodes",
    "plan_replica_set",
    "plan_service",
    "rollback_template",
    "rollout_complete",
    "rollout_history",
    "template_hash",
]
