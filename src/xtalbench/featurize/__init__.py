"""xtalbench.featurize.stage."""
