"""Data layer: particle STAR files, image stacks, maps, and RELION's conventions."""
