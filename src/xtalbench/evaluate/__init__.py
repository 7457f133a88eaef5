"""xtalbench.evaluate.stage."""
