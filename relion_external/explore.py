"""``relion_dynamight_explore``: the headless latent-space analysis as a RELION External job.

GUI: External job, "External executable" ``relion_dynamight_explore``, no input nodes; parameters
(label / value) ``checkpoint`` (the train job's ``checkpoint.pth``; its latent codes are read from
the ``latents.star`` or ``particles.star`` beside it), ``half_set`` (1, 2, or 0 for the validation
set), ``gpu_id``. Writes ``latent_space.star`` and ``logfile.pdf`` (the embedding coloured by each
property) in the job directory, plus the plots, ``maps/`` (one map per k-means cluster, with its
deformed model as PDB and mmCIF), ``subsets/`` (one particle file per cluster: STAR, or ``.cs`` for
cryoSPARC particles) and ``movies/`` (maps along the two main latent directions, with a multi-model
PDB/mmCIF each). A continued job recomputes.
"""

from __future__ import annotations

from dynamight.analysis.plots import embedding_figures
from dynamight.commands import explore_latent_space
from dynamight.commands.options import build_config

from .job import StepContext, run_step
from .logfile import Report
from .registry import EXPLORE

SPEC = EXPLORE


def run(context: StepContext) -> Report:
    """Build the engine's config from the command line, run the analysis into the job directory,
    and report its summary and the embedding plots."""
    args, params = context.args, context.args.params
    config = build_config(explore_latent_space.Config, {
        "output_directory": context.directory, "checkpoint_file": params["checkpoint"],
        "half_set": params["half_set"], "gpu_id": params["gpu_id"], "n_threads": args.threads, "headless": True,
    })
    space, files = explore_latent_space.headless(config, context.control, report=context.directory)
    report = Report(lines=list(files.lines))
    report.lines += [f"latents: {space.latents.table.star_path}",
                     f"cluster maps: {', '.join(str(p.relative_to(context.directory)) for p in files.cluster_maps)}",
                     f"cluster subsets: {', '.join(str(p.relative_to(context.directory)) for p in files.subsets)}",
                     f"deformed models ({'atomic model' if space.models.atomic else 'Gaussians as pseudo-atoms'}): "
                     f"{len(files.models)} files (.pdb, .cif) beside the maps",
                     "movies: " + ", ".join(f"{frames[0].parent.relative_to(context.directory)}/ ({len(frames)} frames)"
                                           for frames in files.movies.values())]
    report.figures = embedding_figures(space.embedding.coords, space.properties, space.embedding.method)
    return report


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return run_step(SPEC, run, argv)
