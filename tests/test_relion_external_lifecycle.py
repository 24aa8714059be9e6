"""The External-job lifecycle in-process, with a toy step: argv parsing, continue, node labels, crashes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import starfile

from dynamight.errors import InputError
from relion_external.job import run_step
from relion_external.logfile import Report
from relion_external.nodes import NodeKind, pipeline_star_version
from relion_external.registry import SPECS
from relion_external.spec import Input, Output, Param, StepSpec, parse_arguments

TOY = StepSpec(
    "relion_toy_step", "toy:main", "A toy step.",
    inputs=(Input("in_parts", "particles"), Input("in_mask", "mask", required=False)),
    params=(Param("n_epochs", int, 3, "epochs", minimum=1), Param("save_deformations", bool, False, "a flag"),
            Param("note", str, None, "free text"), Param("rate", float, 0.5, "a number"),
            Param("checkpoint", Path, None, "an earlier job's file")),
    outputs=(Output("particles.star", NodeKind.PARTICLES, "particles"), Output("model.pth", None, "weights"),
             Output("logfile.pdf", NodeKind.LOGFILE, "log")),
)
JOB = "External/job007/"


@pytest.fixture(autouse=True)
def _restore_logging():
    """run_step installs its own log handlers; put the test runner's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "particles.star").write_text("data_\n")
    (tmp_path / JOB).mkdir(parents=True)
    return tmp_path


def parse(*words: str, before: tuple[str, ...] = ()):
    return parse_arguments(TOY, [*before, "--o", JOB, "--in_parts", "particles.star", *words])


def test_flags_values_and_relion_quirks():
    args = parse("--save_deformations", "--n_epochs", "1e+06", "--note", "two", "words", "--j", "4")
    assert args.params == {"n_epochs": 1_000_000, "save_deformations": True, "note": "two words", "rate": 0.5,
                           "checkpoint": None}
    assert args.threads == 4 and args.output_directory == Path(JOB) and args.inputs["in_mask"] is None
    assert parse("--save_deformations").params["save_deformations"] is True  # bare flag at the end
    assert parse("--save_deformations", "No").params["save_deformations"] is False
    assert parse("--rate", "-2.5", "--pipeline_control", JOB).params["rate"] == -2.5
    assert parse().threads == 1
    empty = parse("--n_epochs", "--note", "--rate", "--checkpoint").params  # RELION's empty values: the defaults
    assert empty == {"n_epochs": 3, "save_deformations": False, "note": None, "rate": 0.5, "checkpoint": None}


@pytest.mark.parametrize("words, message", [
    (["--n_epochs", "2.5"], "--n_epochs expects an integer, got '2.5'"),
    (["--n_epochs", "0"], "--n_epochs 0: must be at least 1"),
    (["--j"], "--j needs a value"),
    (["--rate", "nan"], "--rate expects a number"),
    (["--save_deformations", "maybe"], "--save_deformations is a flag"),
    (["--j", "2", "--j", "3"], "--j given twice"),
    (["--n_gaussians", "5"], "unknown argument(s) stray words --n_gaussians; valid arguments: "
     "--o DIR/, --in_parts FILE, --in_mask FILE, --n_epochs INT, --save_deformations, --note TEXT, --rate NUMBER, "
     "--checkpoint FILE, --j THREADS, --pipeline_control DIR/"),
])
def test_bad_command_lines_are_one_clear_message(words, message):
    with pytest.raises(InputError) as info:
        parse(*words, before=("stray", "words") if "stray" in message else ())
    assert message in str(info.value) and "\n" not in str(info.value)


def toy_step(seen: dict, crash: bool = False, skip: str = ""):
    def step(context) -> Report:
        seen["is_continue"] = context.is_continue
        if crash:
            raise ZeroDivisionError("a bug in the step")
        for name in ("particles.star", "model.pth"):
            if name != skip:
                (context.directory / name).write_text("x")
        return Report(["toy result"], [("a curve", lambda ax: ax.plot([0, 1], [1, 0]))])
    return step


@pytest.mark.parametrize("star_version, label", [(50001, "ParticleGroupMetadata.star.relion"),
                                                 (30001, "ParticlesData.star.relion")])
def test_node_labels_follow_the_project_version(project, star_version, label):
    (project / "default_pipeline.star").write_text(f"\n# version {star_version}\n\ndata_pipeline_general\n")
    assert run_step(TOY, toy_step({}), ["--o", JOB, "--in_parts", "particles.star", "--j", "1"]) == 0
    nodes = starfile.read(project / JOB / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert nodes.values.tolist() == [[f"{JOB}particles.star", label, 3], [f"{JOB}logfile.pdf", "LogFile.pdf.relion", 13]]
    assert sorted(p.name for p in (project / JOB).glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]


def test_version_defaults_to_relion5(tmp_path):
    assert pipeline_star_version(tmp_path) == 50001
    (tmp_path / "default_pipeline.star").write_text("data_pipeline_general\n")
    assert pipeline_star_version(tmp_path) == 50001


@pytest.mark.parametrize("flag, expected", [("1", True), ("0", False), (None, False)])
def test_continue_is_read_from_job_star(project, flag, expected):
    if flag is not None:
        (project / JOB / "job.star").write_text(
            f"# version 50001\n\ndata_job\n\n_rlnJobTypeLabel relion.external\n_rlnJobIsContinue {flag}\n")
    seen: dict = {}
    assert run_step(TOY, toy_step(seen), ["--o", JOB, "--in_parts", "particles.star", "--j", "1"]) == 0
    assert seen["is_continue"] is expected


@pytest.mark.parametrize("crash, skip", [(True, ""), (False, "model.pth")])
def test_crash_or_missing_output_fails_without_nodes(project, capsys, crash, skip):
    assert run_step(TOY, toy_step({}, crash, skip), ["--o", JOB, "--in_parts", "particles.star"]) == 1
    assert sorted(p.name for p in (project / JOB).glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (project / JOB / "RELION_OUTPUT_NODES.star").exists()
    err = capsys.readouterr().err
    assert "Traceback" in err and ("ZeroDivisionError" in err if crash else "without writing model.pth" in err)


def test_a_failed_rerun_leaves_no_stale_declaration(project):
    assert run_step(TOY, toy_step({}), ["--o", JOB, "--in_parts", "particles.star"]) == 0
    assert (project / JOB / "RELION_OUTPUT_NODES.star").exists()
    assert run_step(TOY, toy_step({}), ["--o", JOB, "--in_parts", "particles.star", "--bogus"]) == 1
    assert sorted(p.name for p in (project / JOB).glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (project / JOB / "RELION_OUTPUT_NODES.star").exists()


def test_missing_file_parameter_names_the_file(project, capsys):
    argv = ["--o", JOB, "--in_parts", "particles.star", "--checkpoint", "Schemes/x/train/checkpoint.pth"]
    assert run_step(TOY, toy_step({}), argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ERROR: --checkpoint Schemes/x/train/checkpoint.pth: file not found") and "\n" not in err


def test_without_a_job_directory_there_is_nowhere_to_write(project, capsys):
    assert run_step(TOY, toy_step({}), ["--in_parts", "particles.star"]) == 1
    assert "missing --o" in capsys.readouterr().err
    assert not list(project.rglob("RELION_JOB_EXIT_*"))


def test_every_declared_executable_fits_the_gui():
    for spec in SPECS.values():
        assert spec.executable.startswith("relion_")  # so RELION always appends --pipeline_control
        assert len(spec.params) <= 10 and "logfile.pdf" in [o.name for o in spec.outputs]
        assert spec.usage().startswith(f"usage: {spec.executable} --o DIR/")


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads(PYPROJECT.read_text())


def test_implemented_executables_are_console_scripts():
    import importlib
    import importlib.util

    scripts = _pyproject()["project"]["scripts"]
    implemented = [s for s in SPECS.values() if importlib.util.find_spec(s.entry_point.split(":")[0]) is not None]
    assert "relion_dynamight_reconstruct" in [s.executable for s in implemented]
    for spec in implemented:
        module, function = spec.entry_point.split(":")
        assert callable(getattr(importlib.import_module(module), function))
        assert scripts.get(spec.executable) == spec.entry_point, f"pyproject.toml: add {spec.executable} = \"{spec.entry_point}\""


def test_install_command_is_a_console_script_and_ships_the_schemes():
    from fnmatch import fnmatch

    project = _pyproject()
    assert project["project"]["scripts"].get("relion_dynamight_install_schemes") == "relion_external.install_schemes:main", \
        'pyproject.toml [project.scripts]: add relion_dynamight_install_schemes = "relion_external.install_schemes:main"'
    patterns = project["tool"]["setuptools"]["package-data"]["schemes"]
    root = PYPROJECT.parent / "schemes"
    for path in root.rglob("*.star"):
        assert any(fnmatch(path.relative_to(root).as_posix(), p) for p in patterns), f"{path} is not package data"


def relion_docs() -> str:
    """The RELION users' section: docs/relion.md, or README.md once merged there."""
    root = PYPROJECT.parent
    docs = root / "docs" / "relion.md"
    return docs.read_text() if docs.exists() else (root / "README.md").read_text()


def test_docs_name_every_executable_parameter_and_output():
    text = relion_docs()
    for spec in SPECS.values():
        for word in [spec.executable, *(p.label for p in spec.params), *(o.name for o in spec.outputs)]:
            assert f"`{word}`" in text, f"the RELION section of the docs does not mention `{word}` ({spec.executable})"
