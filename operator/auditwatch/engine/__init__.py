"""Executes a Plan over audit events: prefilter, match, fillnull, stats, rename."""
