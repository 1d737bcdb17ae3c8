"""Audit event decoding: JSON lines and EventList batches -> Splunk-style flat fields."""
