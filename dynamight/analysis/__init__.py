"""Latent-space analysis after training, without a display (the viewer builds on it).

``latents`` (which particles, which codes) -> ``decoding`` (codes -> deformed Gaussians -> maps)
-> ``space`` (the embedding and the per-particle properties, shared with the viewer) ->
``report`` (clusters, maps, movies, particle subsets, plots: the ``--headless`` run).
Nothing here imports napari or Qt.
"""
