"""xtalbench.report.stage."""
