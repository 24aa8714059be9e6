"""Training of the forward deformation model (one model per half-set)."""
