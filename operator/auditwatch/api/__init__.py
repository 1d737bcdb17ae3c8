"""pydantic models of the CRDs (auditwatch.io/v1alpha1): the one source of the CRD schemas."""

from auditwatch.api.models import (
    GROUP,
    VERSION,
    AuditDetection,
    AuditDetectionSpec,
    AuditDetectionStatus,
    DetectionFinding,
    DetectionFindingSpec,
    DetectionFindingStatus,
    load_detection,
    problems,
)

__all__ = [
    "GROUP",
    "VERSION",
    "AuditDetection",
    "AuditDetectionSpec",
    "AuditDetectionStatus",
    "DetectionFinding",
    "DetectionFindingSpec",
    "DetectionFindingStatus",
    "load_detection",
    "problems",
]
