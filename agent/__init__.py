"""podium's node agent: turns Pod objects into running containers on one node.

Rooms:
- ``agent.network``: the pod sandboxes' networking (bridge, veth, host-local IPAM,
  nftables masquerade and hostPort DNAT);
- ``agent.pods``: a Pod's containers as runtime configs, restart back-off, probes,
  and the per-pod worker that keeps them running;
- ``agent.sources``: where pods come from (a directory of static manifests);
- ``agent.daemon``, ``agent.podloop``, ``agent.recovery``: the agent process, its
  loop over the pods, and re-adopting running containers after a restart;
- ``agent.server`` and ``agent.logs``: the gRPC AgentService (ListPods, Logs, Stats);
- ``agent.cli``: the ``podium-agent`` command.
"""
