"""Predefined RELION Schemes (RELION 4.0 and 5.0, ``relion_schemer``), shipped as package data.

Each folder ``<name>/`` holds ``scheme.star`` and one ``<job>/job.star`` per job; it is copied to a
project's ``Schemes/<name>/`` by ``relion_dynamight_install_schemes``:

- ``dynamight``: 3D auto-refine -> mask creation -> DynaMight train -> invert -> deformable
  backprojection -> post-processing -> headless latent-space exploration.
- ``dynamight_from_refine``: the same from mask creation on, starting from an existing refinement's
  ``run_data.star`` and ``run_class001.mrc`` (scheme variables ``particles`` and ``consensus_map``).
"""
