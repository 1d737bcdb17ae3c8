"""auditwatch: Splunk ESCU detections over Kubernetes audit logs, run in-cluster by a kopf operator."""

__version__ = "0.1.0"
