"""Synthetic RELION projects with known per-particle deformations (ground truth)."""
