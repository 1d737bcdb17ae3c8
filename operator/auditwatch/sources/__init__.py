"""Audit-log sources: async iterators of chunks of whole lines, each with the position it came from."""
