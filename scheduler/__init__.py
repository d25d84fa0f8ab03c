"""podium's control plane: the cluster API, its store, placement and controllers.

`scheduler` uses `proto` only; agents and clients reach it over gRPC
(`podium.v1.ClusterService`).
"""
