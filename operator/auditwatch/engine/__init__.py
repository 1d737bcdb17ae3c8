"""Executes a Query over audit events: prefilter, match, fillnull, stats, rename."""
