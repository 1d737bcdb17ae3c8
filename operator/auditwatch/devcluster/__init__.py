"""A local Kubernetes control plane on loopback (etcd + kube-apiserver + kube-controller-manager).

Used by ``auditwatch demo`` and the e2e tests: real binaries, built from the Go module proxy
(``binaries.py``), started with RBAC, token authentication, anonymous auth and audit logging
(``cluster.py``).
"""

from auditwatch.devcluster.binaries import KUBERNETES_VERSION, ensure_binaries
from auditwatch.devcluster.cluster import DevCluster

__all__ = ["KUBERNETES_VERSION", "DevCluster", "ensure_binaries"]
