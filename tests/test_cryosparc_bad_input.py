"""Bad cryoSPARC input: one clear line naming the file and the field, and RELION_JOB_EXIT_FAILURE."""

from __future__ import annotations

import numpy as np
import pytest
from cryosparc.dataset import Dataset

from dynamight.cli import main

from .cryosparc_files import write_cryosparc_project


def _rewrite(cs, edit):
    dataset = Dataset.load(cs)
    edit(dataset).save(cs)


def _break_no_poses(cs):
    _rewrite(cs, lambda d: d.filter_fields([f for f in d.fields() if not f.startswith("alignments3D/")]))
    return "J5_particles.cs", "no poses (field alignments3D/pose"


def _break_several_classes(cs):
    def edit(d):
        d = d.filter_fields([f for f in d.fields() if not f.startswith("alignments3D/")])
        for k in (0, 1, 2):
            d.add_fields([f"alignments_class_{k}/pose", f"alignments_class_{k}/shift"], ["3f4", "2f4"])
        return d
    _rewrite(cs, edit)
    return "J5_particles.cs", "several classes' alignments (alignments_class_0/pose, alignments_class_1/pose"


def _break_missing_blob(cs):
    (cs.parents[1] / "J2" / "extract" / "particles_0000.mrcs").unlink()
    return "J5_particles.cs", "blob/path 'J2/extract/particles_0000.mrcs' not found"


def _break_missing_field(cs):
    _rewrite(cs, lambda d: d.filter_fields([f for f in d.fields() if f != "blob/psize_A"]))
    return "J5_particles.cs", "missing field(s) blob/psize_A"


def _break_not_cs(cs):
    cs.write_text("data_particles\n")
    return "J5_particles.cs", "not a readable cryoSPARC .cs file"


def _break_passthrough_rows(cs):
    passthrough = cs.with_name("J5_passthrough_particles.cs")
    Dataset.load(passthrough).take(np.arange(10)).save(passthrough)
    return "J5_passthrough_particles.cs", "does not hold every particle (uid)"


@pytest.mark.parametrize("breaker", [_break_no_poses, _break_several_classes, _break_missing_blob,
                                     _break_missing_field, _break_not_cs, _break_passthrough_rows])
def test_bad_cryosparc_input_fails_clearly(tiny_project, tmp_path, breaker, caplog):
    cs = write_cryosparc_project(tiny_project / "particles.star", tmp_path / "P1")
    file_name, expected = breaker(cs)
    job = tmp_path / "job"
    code = main(["reconstruct", "--refinement-star-file", str(cs), "--output-directory", str(job),
                 "--gpu-id", "-1", "--pipeline-control", str(job)])
    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert file_name in errors[0] and expected in errors[0], errors[0]
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
