"""σ⁽²⁾: zero for a harmonic model, the hand-derived value for a known quartic term, classes, confusion, any trajectory."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from xtalbench.dynamics.anharmonicity import (
    TrajectoryError,
    classify,
    confusion,
    sigma_trajectory,
)

A, N = 2.5, 3  # simple cubic lattice (Å), N×N×N supercell
K, LAMBDA = 2.0, 1.0  # eV/Å², eV/Å⁴


def lattice() -> Atoms:
    grid = np.array([[i, j, k] for i in range(N) for j in range(N) for k in range(N)], dtype=float) * A
    return Atoms("Ar" * len(grid), positions=grid, cell=np.eye(3) * A * N, pbc=True)


def springs(atoms: Atoms, k: float) -> np.ndarray:
    """Φ of nearest-neighbour central springs, by explicit loops (independent of the code under test)."""
    n = len(atoms)
    fc = np.zeros((n, n, 3, 3))
    for i in range(n):
        for j in range(n):
            d = atoms.positions[j] - atoms.positions[i]
            d -= np.round(d / (A * N)) * A * N
            if i != j and abs(np.linalg.norm(d) - A) < 1e-9:
                e = d / A
                fc[i, j] -= k * np.outer(e, e)
                fc[i, i] += k * np.outer(e, e)
    return fc


def frame(ref: Atoms, u: np.ndarray, forces: np.ndarray) -> Atoms:
    atoms = ref.copy()
    atoms.positions = ref.positions + u
    atoms.calc = SinglePointCalculator(atoms, forces=forces)
    return atoms


def test_harmonic_forces_give_zero_sigma():
    ref = lattice()
    fc = springs(ref, K)
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(5):
        u = rng.normal(scale=0.1, size=(len(ref), 3))
        forces = np.zeros_like(u)
        for i in range(len(ref)):  # naive F_i = −Σ_j Φ_ij u_j
            for j in range(len(ref)):
                forces[i] -= fc[i, j] @ u[j]
        frames.append(frame(ref, u, forces))
    result = sigma_trajectory(frames, ref, {"phi": fc})
    assert np.max(result["phi"]["sigma_t"]) < 1e-12
    assert result["phi"]["class"] == "weak"


def test_known_quartic_term_gives_the_hand_derived_sigma():
    """Einstein crystal F = −k u − λ u³ with Φ = k·1; frames with every |u_iα| = a:
    σ(t) = λa³ / (k a + λ a³) = λa² / (k + λa²). Choosing σ = 0.2 and 0.6 sets a² = σk / (λ(1 − σ))."""
    ref = lattice()
    n = len(ref)
    fc = np.zeros((n, n, 3, 3))
    fc[np.arange(n), np.arange(n)] = K * np.eye(3)
    rng = np.random.default_rng(0)
    frames, amplitudes = [], []
    for target in (0.2, 0.6):
        a = np.sqrt(target * K / (LAMBDA * (1 - target)))
        u = a * rng.choice([-1.0, 1.0], size=(n, 3))
        frames.append(frame(ref, u, -K * u - LAMBDA * u**3))
        amplitudes.append(a)
    result = sigma_trajectory(frames, ref, {"phi": fc})["phi"]
    assert result["sigma_t"] == pytest.approx([0.2, 0.6], abs=1e-12)
    assert result["sigma_mean"] == pytest.approx(0.4, abs=1e-12)
    assert result["class"] == "weak"
    # pooled over frames: sqrt(Σ_t λ²a_t⁶ / Σ_t (k a_t + λ a_t³)²) (all 3N components share |u|)
    a1, a2 = amplitudes
    pooled = np.sqrt((LAMBDA**2 * (a1**6 + a2**6)) / ((K * a1 + LAMBDA * a1**3) ** 2 + (K * a2 + LAMBDA * a2**3) ** 2))
    assert result["sigma_pooled"] == pytest.approx(pooled, rel=1e-12)
    # burn-in drops the first frame
    assert sigma_trajectory(frames, ref, {"phi": fc}, burn_in=1)["phi"]["sigma_mean"] == pytest.approx(0.6)


def test_wrapped_and_reordered_atoms_are_matched_to_their_sites():
    ref = lattice()
    fc = springs(ref, K)
    u = np.zeros((len(ref), 3))
    u[0] = [-0.1, 0.05, 0.0]  # atom 0 sits at the origin: it crosses the cell boundary
    forces = -np.einsum("ijab,jb->ia", fc, u)
    moved = frame(ref, u, forces)
    moved.wrap()
    order = np.random.default_rng(1).permutation(len(ref))
    shuffled = Atoms(moved.numbers[order], positions=moved.positions[order], cell=moved.cell, pbc=True)
    shuffled.calc = SinglePointCalculator(shuffled, forces=forces[order])
    result = sigma_trajectory([shuffled], ref, {"phi": fc})
    assert result["phi"]["sigma_t"][0] == pytest.approx(0.0, abs=1e-12)


def test_user_extxyz_with_dft_forces(tmp_path):
    from ase.io import read, write

    ref = lattice()
    fc = springs(ref, K)
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(3):
        u = rng.normal(scale=0.05, size=(len(ref), 3))
        frames.append(frame(ref, u, -np.einsum("ijab,jb->ia", fc, u) * 1.5))  # forces 1.5 × harmonic: σ = 0.5/1.5
    path = tmp_path / "aimd.extxyz"
    write(path, frames, format="extxyz")
    result = sigma_trajectory(read(path, index=":"), ref, {"dft": fc}, source=str(path))
    assert result["dft"]["sigma_t"] == pytest.approx([1 / 3] * 3, abs=1e-6)


def test_bad_trajectories_are_refused_with_the_source_named():
    ref = lattice()
    fc = springs(ref, K)
    with pytest.raises(TrajectoryError, match="traj.xyz: 2 atoms"):
        sigma_trajectory([Atoms("Ar2", positions=[[0, 0, 0], [1, 1, 1]], cell=np.eye(3) * 7.5, pbc=True)], ref, {"p": fc}, source="traj.xyz")
    with pytest.raises(TrajectoryError, match="no forces"):
        sigma_trajectory([ref.copy()], ref, {"p": fc}, source="traj.xyz")
    other = ref.copy()
    other.numbers[0] = 10
    with pytest.raises(TrajectoryError, match="elements differ"):
        sigma_trajectory([other], ref, {"p": fc}, source="traj.xyz")
    with pytest.raises(TrajectoryError, match="no frames"):
        sigma_trajectory([], ref, {"p": fc})


def test_classes_and_confusion_matrix():
    assert [classify(s) for s in (0.1, 0.5, 0.99, 1.0, 1.01)] == ["weak", "strong", "strong", "strong", "unstable"]
    assert classify(float("nan")) is None and classify(None) is None
    result = confusion(["weak", "weak", "strong", "unstable", None], ["weak", "strong", "strong", "strong", "weak"], "a", "b")
    assert result["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert result["n"] == 4 and result["missing"] == 1 and result["agreement"] == pytest.approx(0.5)
