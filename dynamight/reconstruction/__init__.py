"""Projection and reconstruction in Fourier space: plain and deformable backprojection."""
