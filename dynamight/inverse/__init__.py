"""Inverse deformations: from a particle's deformed frame back to the consensus frame."""
