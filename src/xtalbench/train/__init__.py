"""xtalbench.train.stage."""
