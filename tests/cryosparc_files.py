"""Write cryoSPARC ``.cs`` files for the tests, the way cryoSPARC lays out a project, from a RELION STAR.

The conversion here is independent of :mod:`dynamight.data.cryosparc` (it reads the STAR with
``starfile`` and builds the rotation with scipy): RELION's ``A = Rz(psi) Ry(tilt) Rz(rot)`` with
RELION's (left-handed-looking) ``Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` is
``A^T = Rz'(rot) Ry'(tilt) Rz'(psi)`` in the ordinary right-handed rotations, i.e. scipy's intrinsic
``from_euler("ZYZ", (rot, tilt, psi))``; cryoSPARC's pose is the rotation vector of ``A^T``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import starfile
from cryosparc.dataset import Dataset
from scipy.spatial.transform import Rotation

PARTICLE_FIELDS = [("uid", "u8"), ("blob/path", "O"), ("blob/idx", "u4"), ("blob/shape", "u4", (2,)),
                   ("blob/psize_A", "f4"), ("blob/sign", "f4"), ("blob/import_sig", "u8"),
                   ("alignments3D/split", "u4"), ("alignments3D/shift", "f4", (2,)), ("alignments3D/pose", "f4", (3,)),
                   ("alignments3D/psize_A", "f4"), ("alignments3D/error", "f4"), ("alignments3D/class_posterior", "f4"),
                   ("alignments3D/class", "u4")]
PASSTHROUGH_FIELDS = [("uid", "u8"), ("ctf/type", "O"), ("ctf/exp_group_id", "u4"), ("ctf/accel_kv", "f4"),
                      ("ctf/cs_mm", "f4"), ("ctf/amp_contrast", "f4"), ("ctf/df1_A", "f4"), ("ctf/df2_A", "f4"),
                      ("ctf/df_angle_rad", "f4"), ("ctf/phase_shift_rad", "f4"), ("ctf/scale", "f4"),
                      ("ctf/bfactor", "f4"), ("location/micrograph_path", "O")]


def relion_to_cryosparc_pose(angles_deg: np.ndarray) -> np.ndarray:
    """``(n, 3)`` RELION rot, tilt, psi (degrees) -> ``(n, 3)`` cryoSPARC rotation vectors (radians)."""
    return Rotation.from_euler("ZYZ", angles_deg, degrees=True).as_rotvec()


def write_cryosparc_project(star: Path, project: Path, job: str = "J5", sign: float = 1.0) -> Path:
    """A cryoSPARC project folder for the particles of ``star``: their stacks under ``J2/extract/``,
    ``<job>/<job>_particles.cs`` (blobs and 3D alignments of a refinement) and
    ``<job>/<job>_passthrough_particles.cs`` (the CTF). Returns the particles' ``.cs``."""
    raw = starfile.read(star, always_dict=True)
    particles, optics = raw["particles"], raw["optics"].set_index("rlnOpticsGroup")
    group = optics.loc[particles["rlnOpticsGroup"]]
    n = len(particles)
    index, stacks = zip(*(name.split("@", 1) for name in particles["rlnImageName"]))
    blob_paths = []
    for name in stacks:
        target = project / "J2" / "extract" / Path(name).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(star.parent / name, target)
        blob_paths.append(f"J2/extract/{Path(name).name}")
    pixel = group["rlnImagePixelSize"].to_numpy()
    uid = np.random.default_rng(7).choice(2**62, n, replace=False).astype(np.uint64)

    main = Dataset.allocate(n, PARTICLE_FIELDS)
    main["uid"] = uid
    main["blob/path"] = np.array(blob_paths, dtype=object)
    main["blob/idx"] = np.array(index, dtype=np.int64) - 1
    main["blob/shape"] = np.stack([group["rlnImageSize"].to_numpy()] * 2, -1)
    main["blob/psize_A"] = pixel
    main["blob/sign"] = sign
    main["alignments3D/split"] = particles["rlnRandomSubset"].to_numpy() - 1
    main["alignments3D/shift"] = particles[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / pixel[:, None]
    main["alignments3D/pose"] = relion_to_cryosparc_pose(particles[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
    main["alignments3D/psize_A"] = pixel
    main["alignments3D/class_posterior"] = 1.0

    passthrough = Dataset.allocate(n, PASSTHROUGH_FIELDS)
    passthrough["uid"] = uid
    passthrough["ctf/type"] = np.array(["imported"] * n, dtype=object)
    passthrough["ctf/accel_kv"] = group["rlnVoltage"].to_numpy()
    passthrough["ctf/cs_mm"] = group["rlnSphericalAberration"].to_numpy()
    passthrough["ctf/amp_contrast"] = group["rlnAmplitudeContrast"].to_numpy()
    passthrough["ctf/df1_A"] = particles["rlnDefocusU"].to_numpy()
    passthrough["ctf/df2_A"] = particles["rlnDefocusV"].to_numpy()
    passthrough["ctf/df_angle_rad"] = np.deg2rad(particles["rlnDefocusAngle"].to_numpy())
    passthrough["ctf/phase_shift_rad"] = np.deg2rad(particles.get("rlnPhaseShift", np.zeros(n)))
    passthrough["ctf/scale"] = 1.0
    passthrough["ctf/bfactor"] = particles.get("rlnCtfBfactor", np.zeros(n))
    passthrough["location/micrograph_path"] = np.array(["J1/motioncorrected/mic.mrc"] * n, dtype=object)

    (project / job).mkdir(parents=True, exist_ok=True)
    passthrough.take(np.arange(n)[::-1]).save(project / job / f"{job}_passthrough_particles.cs")  # another row order: matched by uid
    main.save(project / job / f"{job}_particles.cs")
    return project / job / f"{job}_particles.cs"
