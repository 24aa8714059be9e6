import math

import torch

from dynamight.data.geometry import euler_angles_to_matrix, matrix_to_euler_angles, viewing_direction


def test_matrices_are_rotations():
    angles = torch.rand(50, 3, dtype=torch.float64) * torch.tensor([360.0, 180.0, 360.0]) - torch.tensor([180.0, 0, 180.0])
    a = euler_angles_to_matrix(angles)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert torch.allclose(a @ a.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(a), torch.ones(50, dtype=torch.float64))


def test_relion_zyz_composition():
    """A = Rz(psi) Ry(tilt) Rz(rot) with RELION's sign conventions (relion-contract §7)."""
    def rz(a):
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[c, s, 0], [-s, c, 0], [0, 0, 1]], dtype=torch.float64)

    def ry(b):
        c, s = math.cos(b), math.sin(b)
        return torch.tensor([[c, 0, -s], [0, 1, 0], [s, 0, c]], dtype=torch.float64)

    rot, tilt, psi = 33.0, 71.0, -122.0
    expected = rz(math.radians(psi)) @ ry(math.radians(tilt)) @ rz(math.radians(rot))
    got = euler_angles_to_matrix(torch.tensor([rot, tilt, psi], dtype=torch.float64))
    assert torch.allclose(got, expected, atol=1e-12)


def test_round_trip_and_viewing_direction():
    angles = torch.tensor([[10.0, 40.0, -70.0], [-150.0, 120.0, 20.0]], dtype=torch.float64)
    back = matrix_to_euler_angles(euler_angles_to_matrix(angles))
    assert torch.allclose(euler_angles_to_matrix(back), euler_angles_to_matrix(angles), atol=1e-10)
    assert torch.allclose(back, angles, atol=1e-9)
    rot, tilt = torch.deg2rad(angles[:, 0]), torch.deg2rad(angles[:, 1])
    expected = torch.stack([torch.sin(tilt) * torch.cos(rot), torch.sin(tilt) * torch.sin(rot), torch.cos(tilt)], -1)
    assert torch.allclose(viewing_direction(angles), expected, atol=1e-12)
