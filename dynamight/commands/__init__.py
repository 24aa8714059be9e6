"""One module per ``dynamight`` subcommand: a pydantic ``Config`` (the one source of its options and
help text) and ``run(config, job)``."""
