"""The manifests users bring (../shared/examples), as the tests read them.

`tornado()` is the shared folder's tornado.yaml when the checkout sits beside
it, else the copy below (the same text, with its image named by a placeholder
registry), so the tests run in a clean clone too.
"""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "examples"

TORNADO = """\
apiVersion: v1
kind: Service
metadata:
  name: tornado-svc
  labels:
    app: tornado
spec:
  type: LoadBalancer
  ports:
  - port: 80
  selector:
    app: tornado
---
apiVersion: extensions/v1beta1
kind: Deployment
metadata:
  name: tornado-deploy
spec:
  replicas: 3
  template:
    metadata:
      labels:
        app: tornado
    spec:
      containers:
      - name: tornado
        image: registry.example:5000/team/docker-tornado:latest
        ports:
        - containerPort: 8888
"""


def tornado() -> str:
    path = SHARED / "tornado.yaml"
    return path.read_text() if path.is_file() else TORNADO
