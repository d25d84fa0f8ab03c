"""The in-process way of ``container_start.py``, in an interpreter of its own.

    python bench/container_start_library.py ROOT CGROUP_PARENT BUNDLE

Reads one container ID a line on stdin. For each it times ``Runtime.create``,
``start``, ``os.waitpid`` on the init and ``delete``, in this process, and answers
one JSON line: the four phases in seconds, or the error. The first line it writes
says which modules with at-fork handlers it holds (none, unless an import changes).

Why a process of its own: the agent creates every container of a pod in a child of
its fork server, a fresh interpreter that imports only the runtime
(``runtime.forkserver``). The bench's own modules (``subprocess``, and with it
``threading``) would add Python's at-fork handlers to every fork the runtime
makes, about 0.4 ms before each forked child's first step, which the agent's path
does not pay.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prctl  # noqa: E402

from runtime.api import Runtime  # noqa: E402
from runtime.spec import ContainerConfig, load_bundle  # noqa: E402

# Standard modules that register handlers run in every forked child.
AT_FORK_MODULES = ("threading", "logging", "random")


def run(runtime: Runtime, config: ContainerConfig, bundle: Path, cid: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        state = runtime.create(cid, config, bundle=bundle)
        t1 = time.perf_counter()
        runtime.start(cid)
        t2 = time.perf_counter()
        _, status = os.waitpid(state.pid, 0)
        t3 = time.perf_counter()
        runtime.delete(cid)
        t4 = time.perf_counter()
    except Exception as e:  # noqa: BLE001 - any failure is reported, not timed
        try:
            runtime.delete(cid, force=True)
        except Exception:  # noqa: BLE001, S110 - it may never have been created
            pass
        return {"error": f"{type(e).__name__}: {e}"}
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"error": f"init exited with {code}"}
    return {"phases": [t1 - t0, t2 - t1, t3 - t2, t4 - t3]}


def main() -> int:
    root, cgroup_parent, bundle = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    # The init of the user-namespace way is re-parented to us when its first stage exits.
    prctl.set_child_subreaper(1)
    runtime = Runtime(root, cgroup_parent)
    config = load_bundle(bundle).config
    held = [m for m in AT_FORK_MODULES if m in sys.modules]
    print(json.dumps({"at_fork_modules": held}), flush=True)
    while cid := sys.stdin.readline().strip():
        print(json.dumps(run(runtime, config, bundle, cid)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
