import torch

from dynamight.data.fourier import (fft_centred, fsc, half_grid_shells, ifft_centred, irfft_centred, phase_shift_2d,
                                    radial_index, resolution_at, rfft_centred)
from dynamight.reconstruction.deformable import upsample_twice


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


def test_centred_half_spectrum_is_half_of_the_centred_spectrum():
    for size in (8, 9, 10):  # even sizes by sign alternation, odd by shifts
        x = torch.randn(size, size, size, dtype=torch.float64)
        half, full = rfft_centred(x), fft_centred(x, 3)
        assert half.shape == (size, size, size // 2 + 1)
        positive = size - size // 2  # columns kx = 0 .. (size - 1) // 2 of the centred grid
        assert torch.allclose(half[..., :positive], full[..., size // 2:])
        if size % 2 == 0:  # kx = size / 2 is kx = -size / 2, the centred grid's first column
            assert torch.allclose(half[..., -1], full[..., 0])
        assert torch.allclose(irfft_centred(half), x)
        assert torch.allclose(irfft_centred(half.clone(), overwrite_input=True), x)
        assert torch.equal(half_grid_shells(size)[..., :positive], radial_index(size, 3)[..., size // 2:].int())
        kept = x.clone()
        rfft_centred(kept)
        assert torch.equal(kept, x)  # the input is left alone unless overwrite_input


def test_upsampling_twice_interpolates_band_limited_signals_exactly():
    d = 16
    z, y, x = torch.meshgrid(*(torch.arange(2 * d, dtype=torch.float64) / 2 - d // 2,) * 3, indexing="ij")
    signal = torch.cos(2 * torch.pi * (3 * x + 5 * y - 2 * z) / d + 0.3)  # fine grid: half-pixel steps
    volume = signal[::2, ::2, ::2].float()
    up = upsample_twice(volume)
    assert torch.allclose(up[::2, ::2, ::2], volume, atol=1e-5)
    assert torch.allclose(up.double(), signal, atol=1e-4)
