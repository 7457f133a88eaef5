"""xtalbench.tools."""
