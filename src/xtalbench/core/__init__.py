"""xtalbench.core."""
