"""The Gaussian pseudo-atom model and the networks that deform it."""
