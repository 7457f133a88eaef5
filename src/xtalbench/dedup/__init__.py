"""xtalbench.dedup.stage."""
