"""Rows -> DetectionFindings: aggregation and naming (pure), and the API writer."""
