import torch

from dynamight.data.fourier import fft_centred, fsc, ifft_centred, phase_shift_2d, resolution_at


def test_centred_fft_round_trip_and_origin():
    x = torch.zeros(1, 16, 16)
    x[0, 8, 8] = 1.0  # a delta at the rotation centre has a flat, real spectrum
    f = fft_centred(x, 2)
    assert torch.allclose(f, torch.ones_like(f))
    y = torch.randn(2, 16, 16)
    assert torch.allclose(ifft_centred(fft_centred(y, 2), 2), y, atol=1e-5)


def test_phase_shift_moves_content():
    x = torch.zeros(1, 16, 16)
    x[0, 8, 8] = 1.0
    moved = ifft_centred(phase_shift_2d(fft_centred(x, 2), torch.tensor([[3.0, -2.0]])), 2)
    assert moved[0, 6, 11] > 0.99  # +3 px in x, -2 px in y


def test_fsc_of_identical_and_independent_maps():
    a = torch.randn(24, 24, 24)
    assert torch.allclose(fsc(a, a), torch.ones(13), atol=1e-5)
    b = torch.randn(24, 24, 24)
    assert fsc(a, b)[2:].abs().mean() < 0.1
    assert resolution_at(torch.tensor([1.0, 0.9, 0.5, 0.1]), 8, 2.0, 0.143) > 4.0
