"""Executors of the rule IR over audit events: prefilter, match, per-event steps, aggregates, per-row steps."""
