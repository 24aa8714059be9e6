"""``relion_dynamight_install_schemes``: copy the predefined Schemes into a RELION project.

Each scheme goes to ``<project>/Schemes/<name>/`` (``scheme.star`` and one ``<job>/job.star`` per
job), where ``relion_schemer`` and the GUI's Scheme window find it. An existing scheme folder holds
that scheme's state (current node, variable values, which jobs ran), so it is replaced only with
``--force``, and never while its schemer holds the lock.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import starfile

from dynamight.errors import InputError

PACKAGE = "schemes"


def available() -> list[str]:
    """Names of the shipped schemes (folders holding a ``scheme.star``)."""
    root = resources.files(PACKAGE)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "scheme.star").is_file())


def install(project: Path, names: list[str], force: bool = False) -> list[Path]:
    """Copy the schemes ``names`` into ``project/Schemes/``; return the folders written.

    Raises:
        InputError: ``project`` is not a directory; a scheme exists (without ``force``) or is running.
    """
    if not project.is_dir():
        raise InputError(f"{project}: not a directory (expected a RELION project directory)")
    written = []
    for name in names:
        target = project / "Schemes" / name
        if (project / f".relion_lock_scheme_{name}").exists():
            raise InputError(f"{target}: its schemer is running (lock .relion_lock_scheme_{name}); stop it first")
        if target.exists() and not force:
            raise InputError(f"{target} already exists (it holds the scheme's state); pass --force to replace it")
        if target.exists():
            shutil.rmtree(target)
        _copy(resources.files(PACKAGE) / name, target)
        written.append(target)
    return written


def unset_variables(scheme_star: Path) -> list[str]:
    """String variables still ``undefined`` in ``scheme_star``: the inputs a user must set."""
    strings = starfile.read(scheme_star, always_dict=True).get("scheme_strings")
    if strings is None:
        return []
    return [name for name, value in zip(strings["rlnSchemeStringVariableName"], strings["rlnSchemeStringVariableValue"])
            if value == "undefined"]


def _copy(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy(entry, target / entry.name)
        elif entry.name.endswith(".star"):
            (target / entry.name).write_bytes(entry.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    names = available()
    parser = argparse.ArgumentParser(prog="relion_dynamight_install_schemes", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="RELION project directory (default: here)")
    parser.add_argument("--scheme", action="append", choices=names, help="scheme to install (default: all)")
    parser.add_argument("--force", action="store_true", help="replace schemes that are already installed")
    args = parser.parse_args(argv)
    if not (args.project / "default_pipeline.star").exists():
        print(f"warning: {args.project.resolve()} has no default_pipeline.star; is it a RELION project?", file=sys.stderr)
    try:
        written = install(args.project, args.scheme or names, args.force)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    for target in written:
        print(f"installed {target}; from the project directory, set its inputs and run it:")
        for variable in unset_variables(target / "scheme.star"):
            print(f"  relion_schemer --scheme {target.name} --set_var {variable} --value FILE --original_value FILE")
        print(f"  relion_schemer --scheme {target.name} --run --pipeline_control Schemes/{target.name}/")
    return 0
