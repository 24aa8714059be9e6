"""Thin RELION adapters: each executable turns RELION's External-job command line into one engine call.

argv -> validated arguments (:mod:`.spec`) -> one step of :mod:`dynamight` -> output files ->
``RELION_OUTPUT_NODES.star`` (:mod:`.nodes`) -> one exit file. The lifecycle is :mod:`.job`; the
declarations of every executable (inputs, parameters, outputs) are in :mod:`.registry`. Imports go one
way: this package uses :mod:`dynamight`, never the reverse. The rules RELION imposes are in
``relion-contract.md`` (sections 1 to 5).
"""
