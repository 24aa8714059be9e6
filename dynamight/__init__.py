"""DynaMight: per-particle deformations of a Gaussian pseudo-atom model, for RELION.

Shape glossary used in every docstring: ``b`` batch of particles, ``n`` Gaussians, ``l`` latent
dimensions, ``d`` box size in pixels (``d2 = 2 * d`` padded), ``h, w`` image height and width.
Coordinates are ``xyz`` (a volume array is indexed ``[z, y, x]``); lengths are in Ångström unless a
name says ``_px``.
"""

__version__ = "0.1.0"
