"""Defaults that commands show in their help without loading the pydantic models (0.3 s of start-up)."""

# Where control planes write the API server's audit log: kubeadm and kind, OpenShift, RKE2, k3s, Talos.
AUDIT_LOG_DIRS = (
    "/var/log/kubernetes",
    "/var/log/kube-apiserver",
    "/var/lib/rancher/rke2/server/logs",
    "/var/lib/rancher/k3s/server/logs",
    "/var/log/audit/kube",
)
