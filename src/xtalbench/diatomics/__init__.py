"""Dimer energy curves of a model against DFT: a physics test far from any crystal."""
