from auditwatch.cli import entry

entry()
