"""The API: pydantic models of the CRDs (models.py, the one source of their schemas), the operator's
Settings, and reading manifests (manifest.py, without pydantic: `auditwatch scan` starts without it).
Nothing is imported here, so that importing one module of the package loads no other."""
