"""Declarations of an External-job executable, and its command line as RELION builds it.

RELION runs (relion-contract.md §1)::

    <exe> --o External/job012/ [--in_parts F] [--in_3dref F] [--in_mask F] [--<label> <value>]...
          --j <threads> <other_args> [--pipeline_control External/job012/]

Nothing is quoted, so a value may arrive as several words (joined again with single spaces for text
and paths); an empty value gives a bare ``--label``, which is ``True`` for a flag. Anything not
declared is rejected in one message that lists the valid arguments. An empty value of any other
optional parameter means "not given": its default (a Scheme's empty variable, e.g. ``gpu_id``, asks
for the default: the first GPU if there is one, else the CPU). This module is pure (no torch):
the scheme validator and the installer use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dynamight.errors import InputError

from .nodes import NodeKind

InputFlag = Literal["in_movies", "in_mics", "in_parts", "in_coords", "in_3dref", "in_mask"]
#: the External job's ``job.star`` key behind each input flag
JOBSTAR_INPUT_KEYS: dict[str, str] = {"in_movies": "in_mov", "in_mics": "in_mic", "in_parts": "in_part",
                                      "in_coords": "in_coords", "in_3dref": "in_3dref", "in_mask": "in_mask"}
RESERVED = {"o", "j", "pipeline_control", *JOBSTAR_INPUT_KEYS}
MAX_PARAMETERS = 10  # the GUI's ten label/value pairs
_TRUE, _FALSE = {"yes", "true", "1", "on"}, {"no", "false", "0", "off"}


@dataclass(frozen=True)
class Input:
    """An input file passed as ``--in_*`` (a path relative to the project directory)."""

    flag: InputFlag
    help: str
    required: bool = True


@dataclass(frozen=True)
class Param:
    """A ``--<label> <value>`` parameter. ``kind`` is int, float, str, Path or bool (a flag).

    ``default=None`` with ``required=False`` means "not given" (the step decides)."""

    label: str
    kind: type
    default: Any
    help: str
    required: bool = False
    minimum: float | None = None


@dataclass(frozen=True)
class Output:
    """A file the step writes directly in its job directory; ``node`` declares it to RELION."""

    name: str
    node: NodeKind | None
    help: str


@dataclass(frozen=True)
class StepSpec:
    """Everything RELION and a Scheme need to know about one executable."""

    executable: str
    entry_point: str  # "module:function", as in pyproject's [project.scripts]
    summary: str
    inputs: tuple[Input, ...]
    params: tuple[Param, ...]
    outputs: tuple[Output, ...]

    def __post_init__(self) -> None:
        labels = [p.label for p in self.params]
        if len(labels) > MAX_PARAMETERS or len(set(labels)) != len(labels) or RESERVED & set(labels):
            raise ValueError(f"{self.executable}: parameters {labels} must be unique, at most "
                             f"{MAX_PARAMETERS}, and not one of {sorted(RESERVED)}")
        if "logfile.pdf" not in {o.name for o in self.outputs} or any("/" in o.name for o in self.outputs):
            raise ValueError(f"{self.executable}: outputs must sit directly in the job directory and include logfile.pdf")

    def param(self, label: str) -> Param:
        return next(p for p in self.params if p.label == label)

    def valid_arguments(self) -> list[str]:
        """Every accepted argument with a hint of its value, in RELION's order."""
        hint = {int: "INT", float: "NUMBER", str: "TEXT", Path: "FILE"}
        return (["--o DIR/"] + [f"--{i.flag} FILE" for i in self.inputs]
                + [f"--{p.label}" + ("" if p.kind is bool else f" {hint[p.kind]}") for p in self.params]
                + ["--j THREADS", "--pipeline_control DIR/"])

    def usage(self) -> str:
        """``--help`` text: the synopsis, the summary, then one line per argument with its help."""
        optional = {f"--{i.flag}" for i in self.inputs if not i.required}
        optional |= {f"--{p.label}" for p in self.params if not p.required} | {"--j", "--pipeline_control"}
        synopsis = [f"[{a}]" if a.split()[0] in optional else a for a in self.valid_arguments()]
        lines = [f"usage: {self.executable} " + " ".join(synopsis), "", self.summary, "",
                 "  --o DIR/                    job directory (RELION: External/jobNNN/)"]
        lines += [f"  --{i.flag:<26}{i.help}" + ("" if i.required else " (optional)") for i in self.inputs]
        for p in self.params:
            note = "flag" if p.kind is bool else "required" if p.required else (
                "optional" if p.default is None else f"default: {p.default}")
            lines.append(f"  --{p.label:<26}{p.help} ({note})")
        lines.append("  --j THREADS                 CPU threads (RELION's 'Number of threads'; default: 1)")
        lines.append("  --pipeline_control DIR/     where RELION wants the exit files (default: the --o directory)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Arguments:
    """A parsed, typed command line. ``inputs`` and ``params`` hold every declared name (defaults
    filled in; ``None`` when absent)."""

    output_directory: Path
    inputs: dict[str, Path | None]
    params: dict[str, Any]
    threads: int
    pipeline_control: Path | None


def parse_arguments(spec: StepSpec, argv: list[str]) -> Arguments:
    """Parse ``argv`` as RELION builds it; raise :class:`InputError` (one line) on any problem."""
    words: dict[str, list[str]] = {}
    unknown: list[str] = []
    known = {"o", "j", "pipeline_control", *(i.flag for i in spec.inputs), *(p.label for p in spec.params)}
    i = 0
    while i < len(argv):
        token = argv[i]
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        name = token[2:] if token.startswith("--") else None
        if name not in known:
            unknown.append(token if name is not None else " ".join(argv[i:j]))
        elif name in words:
            raise InputError(f"{spec.executable}: --{name} given twice")
        else:
            words[name] = argv[i + 1:j]
        i = j
    if unknown:
        raise InputError(f"{spec.executable}: unknown argument(s) {' '.join(unknown)}; valid arguments: "
                         + ", ".join(spec.valid_arguments()))
    if "o" not in words or not words["o"]:
        raise InputError(f"{spec.executable}: missing --o DIR/ (the job directory)")
    inputs = {i.flag: _value(spec, i.flag, Path, words.get(i.flag), i.required) for i in spec.inputs}
    params = {p.label: _param(spec, p, words.get(p.label)) for p in spec.params}
    threads = _value(spec, "j", int, words.get("j"), False)
    if threads is not None and threads < 1:
        raise InputError(f"{spec.executable}: --j {threads}: the number of threads must be at least 1")
    control = _value(spec, "pipeline_control", Path, words.get("pipeline_control"), False)
    return Arguments(_value(spec, "o", Path, words["o"], True), inputs, params, threads or 1, control)


def _param(spec: StepSpec, p: Param, words: list[str] | None) -> Any:
    if p.kind is bool:
        if words is None:
            return bool(p.default)
        if not words:
            return True
        if len(words) == 1 and words[0].lower() in _TRUE | _FALSE:
            return words[0].lower() in _TRUE
        raise InputError(f"{spec.executable}: --{p.label} is a flag: give it bare, or Yes/No (got '{' '.join(words)}')")
    if words is not None and not words and not p.required:  # an empty value: the default
        return p.default
    value = _value(spec, p.label, p.kind, words, p.required)
    if value is None:
        return p.default
    if p.minimum is not None and value < p.minimum:
        raise InputError(f"{spec.executable}: --{p.label} {value}: must be at least {p.minimum:g}")
    return value


def _value(spec: StepSpec, name: str, kind: type, words: list[str] | None, required: bool) -> Any:
    """Convert the words after ``--name`` to ``kind``; ``None`` when absent and not required."""
    what = {int: "an integer", float: "a number", str: "a text", Path: "a file name"}[kind]
    if words is None:
        if required:
            raise InputError(f"{spec.executable}: missing --{name} ({what} is required)")
        return None
    if not words:
        raise InputError(f"{spec.executable}: --{name} needs a value ({what})")
    if kind in (str, Path):
        return kind(" ".join(words))
    if len(words) == 1:
        try:
            number = float(words[0])
            if kind is float and math.isfinite(number):
                return number
            if kind is int and number.is_integer():  # RELION prints large floats as 1e+06
                return int(number)
        except ValueError:
            pass
    raise InputError(f"{spec.executable}: --{name} expects {what}, got '{' '.join(words)}'")


def check_files(spec: StepSpec, args: Arguments, project_directory: Path) -> None:
    """Raise :class:`InputError` unless every given input file and file parameter exists."""
    given = [(f"--{k}", v) for k, v in args.inputs.items()]
    given += [(f"--{p.label}", args.params[p.label]) for p in spec.params if p.kind is Path]
    for flag, path in given:
        if path is None:
            continue
        full = path if path.is_absolute() else project_directory / path
        if not full.exists():
            raise InputError(f"{flag} {path}: file not found (relative paths start in the project "
                             f"directory {project_directory})")
        if full.is_dir():
            raise InputError(f"{flag} {path}: is a directory; expected a file")
