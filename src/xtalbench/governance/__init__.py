"""xtalbench.governance."""
