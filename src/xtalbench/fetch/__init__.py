"""xtalbench.fetch.stage."""
