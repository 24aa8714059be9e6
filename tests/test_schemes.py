"""The shipped RELION Schemes, checked against RELION's rules (relion-contract.md §4-§5) and against the
declarations of our executables (``relion_external.registry``).

These checks follow ``schemer.cpp`` of RELION 4.0/5.0 and need no RELION (Debian ships RELION 3.1,
which has Schedules, not Schemes); ``test_relion5_schemes.py`` runs each Scheme with real RELION 5's
``relion_schemer`` where it is available.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import starfile

from dynamight.errors import InputError
from relion_external.install_schemes import available, main as install_main
from relion_external.registry import SPECS
from relion_external.spec import JOBSTAR_INPUT_KEYS, parse_arguments

SCHEMES = Path(__file__).resolve().parents[1] / "schemes"
JOB_TYPES = {"relion.refine3d", "relion.maskcreate", "relion.external", "relion.postprocess"}
RELION_OUTPUTS = {  # files RELION's own jobs write directly in their job directory
    "relion.refine3d": {"run_data.star", "run_class001.mrc", "run_half1_class001_unfil.mrc",
                        "run_half2_class001_unfil.mrc", "run_model.star", "run_optimiser.star"},
    "relion.maskcreate": {"mask.mrc"},
    "relion.postprocess": {"postprocess.mrc", "postprocess_masked.mrc", "logfile.pdf", "postprocess.star"},
}
# RELION's kinds of job option, for the options our job.star files fill from variables: a boolean
# variable only goes into Yes/No options, a string variable never into a number (slider) option.
BOOLEAN_OPTIONS = {"do_queue", "use_gpu", "ref_correct_greyscale"}
NUMBER_OPTIONS = {"nr_threads", "nr_mpi", "particle_diameter", "ini_high", "lowpass_filter", "inimask_threshold",
                  "extend_inimask", "width_mask_edge"}
TEXT_OPTIONS = {"fn_img", "fn_ref", "fn_in", "fn_mask", "sym_name", *JOBSTAR_INPUT_KEYS.values(),
                *(f"param{i}_value" for i in range(1, 11))}
REFERENCE = re.compile(r"Schemes/([^/\s]+)/([^/\s]+)/(\S*)")
OPERATORS_WITH = {"bool=file_exists": ("bools", "strings"), "exit": (None, None)}


@dataclass
class Scheme:
    name: str
    tables: dict
    variables: dict[str, tuple[str, object]]  # name -> (kind, value), kind in floats/bools/strings
    jobs: dict[str, tuple[str, dict[str, str]]]  # job -> (type label, options)

    def order(self) -> list[str]:
        """Nodes in the order the schemer visits them on the all-inputs-present path (forks: TRUE)."""
        edges = {e.rlnSchemeEdgeInputNodeName: e for e in self.tables["scheme_edges"].itertuples()}
        node, seen = self.tables["scheme_edges"]["rlnSchemeEdgeInputNodeName"].iloc[0], []
        while node in edges and node not in seen:
            seen.append(node)
            e = edges[node]
            node = e.rlnSchemeEdgeOutputNodeNameIfTrue if e.rlnSchemeEdgeIsFork else e.rlnSchemeEdgeOutputNodeName
        return seen + [node]


def read_scheme(name: str) -> Scheme:
    folder = SCHEMES / name
    tables = starfile.read(folder / "scheme.star", always_dict=True)
    variables = {}
    for kind, prefix in (("floats", "Float"), ("bools", "Boolean"), ("strings", "String")):
        table = tables.get(f"scheme_{kind}", pd.DataFrame())
        for row in table.to_dict("records"):
            key = row[f"rlnScheme{prefix}VariableName"]
            assert key not in variables, f"{name}: variable {key} defined twice"
            variables[key] = (kind, row[f"rlnScheme{prefix}VariableValue"])
    jobs = {}
    for job in tables["scheme_jobs"]["rlnSchemeJobNameOriginal"]:
        star = starfile.read(folder / job / "job.star", always_dict=True)
        values = star["joboptions_values"]
        options = dict(zip(values["rlnJobOptionVariable"], values["rlnJobOptionValue"].fillna("").astype(str)))
        jobs[job] = (star["job"]["rlnJobTypeLabel"], options)
        assert int(star["job"]["rlnJobIsContinue"]) == 0, f"{folder / job / 'job.star'}: must start as a new job"
    return Scheme(name, tables, variables, jobs)


def substitute(scheme: Scheme, value: str) -> str:
    """A value as the schemer hands it to the job: ``$$var`` replaced (floats as C++ prints them),
    then a ``Schemes/<name>/<job>/`` reference by a job directory."""
    def variable(match: re.Match) -> str:
        kind, v = scheme.variables[match.group(1)]
        return format(float(v), "g") if kind == "floats" else str(v)
    value = re.sub(r"\$\$(\S+)", variable, value)
    return REFERENCE.sub(lambda m: f"External/job099/{m.group(3)}", value)


def outputs_of(scheme: Scheme, job: str) -> set[str]:
    label, options = scheme.jobs[job]
    if label == "relion.external":
        return {o.name for o in SPECS[options["fn_exe"]].outputs}
    return RELION_OUTPUTS[label]


@pytest.fixture(params=available())
def scheme(request) -> Scheme:
    return read_scheme(request.param)


def test_both_schemes_are_shipped():
    assert available() == ["dynamight", "dynamight_from_refine"]


def test_files_parse_and_agree(scheme):
    folder = SCHEMES / scheme.name
    for path in [folder / "scheme.star", *folder.glob("*/job.star")]:
        assert path.read_text().startswith("# version 30001\n"), f"{path}: RELION 4 and 5 read version 30001"
    general = scheme.tables["scheme_general"]
    assert general["rlnSchemeName"] == f"Schemes/{scheme.name}/"
    assert general["rlnSchemeCurrentNodeName"] == scheme.tables["scheme_edges"]["rlnSchemeEdgeInputNodeName"].iloc[0]
    jobs = scheme.tables["scheme_jobs"]
    assert list(jobs["rlnSchemeJobName"]) == list(jobs["rlnSchemeJobNameOriginal"])
    assert set(jobs["rlnSchemeJobMode"]) <= {"new", "continue"} and set(jobs["rlnSchemeJobHasStarted"]) == {0}
    assert {p.parent.name for p in folder.glob("*/job.star")} == set(scheme.jobs)
    for job, (label, _) in scheme.jobs.items():
        assert label in JOB_TYPES, f"{folder / job / 'job.star'}: unexpected job type {label}"
    refine = jobs[jobs["rlnSchemeJobNameOriginal"].isin([j for j, (t, _) in scheme.jobs.items() if t != "relion.external"])]
    assert set(refine["rlnSchemeJobMode"]) == {"new"}  # a RELION job continued without fn_cont would fail


def test_external_jobs_run_our_executables_with_valid_command_lines(scheme):
    for job, (label, options) in scheme.jobs.items():
        if label != "relion.external":
            continue
        where = f"{scheme.name}/{job}/job.star"
        assert options["fn_exe"] in SPECS, f"{where}: fn_exe {options['fn_exe']} is not one of {sorted(SPECS)}"
        spec = SPECS[options["fn_exe"]]
        argv = ["--o", "External/job099/"]
        for flag, key in JOBSTAR_INPUT_KEYS.items():
            if options.get(key):
                argv += [f"--{flag}", *substitute(scheme, options[key]).split()]
        for i in range(1, 11):
            label_i, value = options.get(f"param{i}_label", ""), options.get(f"param{i}_value", "")
            assert label_i or not value, f"{where}: param{i}_value without a label is silently dropped by RELION"
            if label_i:
                argv += [f"--{label_i}", *substitute(scheme, value).split()]
        argv += ["--j", substitute(scheme, options["nr_threads"]), "--pipeline_control", "External/job099/"]
        try:
            parse_arguments(spec, argv)
        except InputError as exc:
            pytest.fail(f"{where}: {exc}")


def test_file_references_name_files_their_job_writes_before(scheme):
    order = scheme.order()
    values = [(job, key, value) for job, (_, options) in scheme.jobs.items() for key, value in options.items()]
    values += [(None, name, value) for name, (kind, value) in scheme.variables.items() if kind == "strings"]
    for job, key, value in values:
        where = f"{scheme.name}/{job}/job.star {key}" if job else f"{scheme.name}/scheme.star variable {key}"
        references = REFERENCE.findall(str(value))
        assert len(references) <= 1, f"{where}: the schemer replaces only one job reference per value"
        for name, producer, file in references:
            assert name == scheme.name and producer in scheme.jobs, f"{where}: {value} names no job of this scheme"
            assert "/" not in file and file in outputs_of(scheme, producer), \
                f"{where}: {producer} does not write {file} directly in its job directory"
            if job is not None:
                assert order.index(producer) < order.index(job), f"{where}: {producer} runs after {job}"
    for job, (label, options) in scheme.jobs.items():
        if label == "relion.postprocess":
            half = options["fn_in"].rsplit("/", 1)[-1]
            assert "half1" in half and half.replace("half1", "half2") in outputs_of(scheme, REFERENCE.search(
                options["fn_in"]).group(2)), f"{scheme.name}/{job}: postprocess needs both half-maps"


def test_edges_lead_from_the_first_node_to_the_end(scheme):
    edges = scheme.tables["scheme_edges"]
    operators = {o.rlnSchemeOperatorName: o for o in scheme.tables["scheme_operators"].itertuples()}
    nodes = set(scheme.jobs) | set(operators)
    assert edges["rlnSchemeEdgeInputNodeName"].is_unique, "a node has more than one outgoing edge"
    for e in edges.itertuples():
        targets = [e.rlnSchemeEdgeOutputNodeName] + ([e.rlnSchemeEdgeOutputNodeNameIfTrue] if e.rlnSchemeEdgeIsFork else [])
        assert {e.rlnSchemeEdgeInputNodeName, *targets} <= nodes, f"edge {e} names an unknown node"
        if e.rlnSchemeEdgeIsFork:
            assert scheme.variables.get(e.rlnSchemeEdgeBooleanVariable, ("",))[0] == "bools", f"fork {e}"
    outgoing = {e.rlnSchemeEdgeInputNodeName: e for e in edges.itertuples()}
    reached, stack = set(), [(edges["rlnSchemeEdgeInputNodeName"].iloc[0], ())]
    while stack:
        node, path = stack.pop()
        assert node not in path, f"{scheme.name}: cycle through {node}"
        reached.add(node)
        e = outgoing.get(node)
        if e is None:
            assert node in operators and operators[node].rlnSchemeOperatorType == "exit", f"{node} ends the scheme"
            continue
        stack.append((e.rlnSchemeEdgeOutputNodeName, path + (node,)))
        if e.rlnSchemeEdgeIsFork:
            stack.append((e.rlnSchemeEdgeOutputNodeNameIfTrue, path + (node,)))
    assert reached == nodes, f"{scheme.name}: never reached {nodes - reached}"
    assert set(scheme.jobs) <= set(scheme.order()), "the all-inputs-present path skips a job"
    for o in operators.values():
        output_kind, input_kind = OPERATORS_WITH[o.rlnSchemeOperatorType]
        for name, kind in ((o.rlnSchemeOperatorOutput, output_kind), (o.rlnSchemeOperatorInput1, input_kind)):
            assert (name == "undefined") if kind is None else scheme.variables.get(name, ("",))[0] == kind, o


def test_variable_references_exist_with_the_right_type(scheme):
    for job, (_, options) in scheme.jobs.items():
        for key, value in options.items():
            for name in re.findall(r"\$\$(\S+)", value):
                where = f"{scheme.name}/{job}/job.star {key} = {value}"
                assert name in scheme.variables, f"{where}: no variable {name} in scheme.star"
                kind = scheme.variables[name][0]
                assert key in BOOLEAN_OPTIONS | NUMBER_OPTIONS | TEXT_OPTIONS, f"{where}: classify option {key}"
                assert (kind == "bools") == (key in BOOLEAN_OPTIONS), f"{where}: {kind} variable in a {key} option"
                assert not (kind == "strings" and key in NUMBER_OPTIONS), f"{where}: text in a number option"


def test_install_copies_every_file_and_protects_state(tmp_path, capsys):
    assert install_main(["--project", str(tmp_path)]) == 0
    for name in available():
        shipped = sorted(p.relative_to(SCHEMES / name) for p in (SCHEMES / name).rglob("*.star"))
        installed = sorted(p.relative_to(tmp_path / "Schemes" / name) for p in (tmp_path / "Schemes" / name).rglob("*"))
        assert installed == sorted({*shipped, *{p.parent for p in shipped if p.parent != Path(".")}})
        assert (tmp_path / "Schemes" / name / "scheme.star").read_bytes() == (SCHEMES / name / "scheme.star").read_bytes()
    assert "--set_var consensus_map" in capsys.readouterr().out
    (tmp_path / "Schemes" / "dynamight" / "scheme.star").write_text("edited")
    assert install_main(["--project", str(tmp_path), "--scheme", "dynamight"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert install_main(["--project", str(tmp_path), "--scheme", "dynamight", "--force"]) == 0
    assert (tmp_path / "Schemes" / "dynamight" / "scheme.star").read_bytes() == (SCHEMES / "dynamight" / "scheme.star").read_bytes()
    (tmp_path / ".relion_lock_scheme_dynamight").mkdir()
    assert install_main(["--project", str(tmp_path), "--force"]) == 1
    assert "schemer is running" in capsys.readouterr().err


def test_docs_list_every_scheme_variable_a_user_sets(scheme):
    from .test_relion_external_lifecycle import relion_docs

    text = relion_docs()
    internal = {e for e in scheme.tables["scheme_edges"]["rlnSchemeEdgeBooleanVariable"] if e != "undefined"}
    for name in set(scheme.variables) - internal:
        assert f"`{name}`" in text, f"the docs' Scheme variable table lacks `{name}` ({scheme.name})"
