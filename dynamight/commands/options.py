"""Build argparse options from a pydantic config: ``field_name`` -> ``--field-name``.

Field metadata (``json_schema_extra``): ``positional`` (an argument without ``--``), ``aliases``
(extra option spellings, e.g. upstream's ``--vae-directory``).
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError


class StepConfig(BaseModel):
    """The options every computing command has: the device and the CPU threads (immutable; unknown
    fields are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_id: int | None = Field(None, description="GPU to use; -1 for the CPU (default: first GPU, else CPU)")
    n_threads: int = Field(0, ge=0, description="CPU threads for torch (0: torch's default)")


class ParticleFileOptions(BaseModel):
    """How a cryoSPARC ``.cs`` particle file is read (``--refinement-star-file`` may name one; see
    :mod:`dynamight.data.cryosparc`); unused for STAR files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cs_passthrough_file: Path | None = Field(
        None, description="cryoSPARC input: the passthrough .cs holding the fields the particles' .cs lacks "
                          "(default: the *_passthrough_particles*.cs beside it, if any)")
    cs_project_directory: Path | None = Field(
        None, description="cryoSPARC input: the project directory that blob/path is relative to (default: two "
                          "folders above the .cs, then its own folder, then the working directory)")


def _base_type(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation


def add_config_arguments(parser: argparse.ArgumentParser, config: type[BaseModel]) -> None:
    """Add one argument per field of ``config`` (the common :class:`StepConfig` ones last)."""
    fields = sorted(config.model_fields.items(), key=lambda item: item[0] in StepConfig.model_fields)
    for name, field in fields:
        extra = field.json_schema_extra or {}
        kind = _base_type(field.annotation)
        kwargs: dict = {"help": field.description, "dest": name}
        if typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
            kind = type(kwargs["choices"][0])
        if extra.get("positional"):
            parser.add_argument(name, type=kind, help=field.description)
            continue
        flags = ["--" + name.replace("_", "-")] + list(extra.get("aliases", []))
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = Path if kind is Path else kind
            kwargs["metavar"] = name.upper().split("_")[-1] if kind is not Path else "PATH"
        if field.is_required():
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS
            if field.default is not None:
                kwargs["help"] = f"{field.description} (default: {field.default})"
        parser.add_argument(*flags, **kwargs)


def build_config(config: type[BaseModel], values: dict) -> BaseModel:
    """Validate parsed values; a validation error becomes one :class:`InputError` line."""
    try:
        return config(**{k: v for k, v in values.items() if k in config.model_fields})
    except ValidationError as exc:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise InputError(f"invalid options: {problems}") from exc
