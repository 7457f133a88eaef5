"""xtalbench: leakage-free out-of-distribution benchmarks for ML interatomic potentials."""

__version__ = "0.1.0"
