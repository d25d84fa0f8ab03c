"""podium's node agent: turns Pod objects into running containers on one node.

Rooms so far: ``agent.network`` (the pod sandboxes' networking: bridge, veth,
host-local IPAM, nftables masquerade and hostPort DNAT).
"""
