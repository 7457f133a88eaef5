"""Dynamics stages: phonons against DFT references, short MD, and the anharmonicity score σ⁽²⁾.

- `reference`: the DFT phonon references (phonopy examples) and their functional.
- `calculator`: an ASE Calculator in front of any project predictor.
- `phonons`: model force constants on the reference's displacements, bands, DOS, errors vs DFT.
- `md`: Langevin MD with failure detection and an equilibration rule.
- `anharmonicity`: σ⁽²⁾(t) for any trajectory with forces, classes and confusion matrices.
"""
