"""Random fields for synthetic lesions: smooth noise for shapes, periodic textures for their interior.

Both live on the training patch's voxel grid.  The textures are made once per grid (a trainer makes
them once): a lesion takes a randomly shifted window of one of them, so a batch costs only indexing.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


def smooth_noise(shape: Sequence[int], cells: int, generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Low-frequency noise of unit scale on `shape`: a coarse random grid of about `cells` nodes per
    axis, upsampled trilinearly, so its features scale with `shape` (a lesion's bounding box)."""
    coarse = torch.randn((1, 1) + tuple(max(2, min(cells, s)) for s in shape), generator=generator)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(coarse.to(device), size=tuple(shape), mode=mode, align_corners=True)[0, 0]


class PeriodicTextures:
    """Zero-mean, unit-std Gaussian random fields with correlation lengths given in mm.

    Filtered in the Fourier domain, so each field is periodic: a window shifted by any amount wraps
    around without a seam.  Scales below the grid's spacing come out as plain voxel noise, which is
    all that grid can show.
    """

    def __init__(self, spacing: Sequence[float], scales_mm: Sequence[float], seed: int = 0):
        self.spacing = tuple(float(s) for s in spacing)
        self.scales_mm = tuple(float(s) for s in scales_mm)
        self.seed = seed
        self._fields: Dict[Tuple[Tuple[int, ...], str], torch.Tensor] = {}

    def fields(self, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """[S, *shape] float32, one field per scale (made on first use for this grid and device)."""
        key = (tuple(int(s) for s in shape), str(device))
        if key not in self._fields:
            g = torch.Generator().manual_seed(self.seed)
            noise = torch.randn((len(self.scales_mm),) + key[0], generator=g)
            spectrum = torch.fft.rfftn(noise, dim=tuple(range(1, noise.ndim)))
            out = []
            for i, scale in enumerate(self.scales_mm):
                gain = torch.ones(())
                for axis, (n, sp) in enumerate(zip(key[0], self.spacing)):
                    freq = torch.fft.rfftfreq(n) if axis == len(key[0]) - 1 else torch.fft.fftfreq(n)
                    sigma = scale / sp                                   # voxels
                    shape_b = [1] * len(key[0])
                    shape_b[axis] = len(freq)
                    gain = gain * torch.exp(-2.0 * (math.pi * sigma * freq) ** 2).reshape(shape_b)
                field = torch.fft.irfftn(spectrum[i] * gain, s=key[0])
                out.append((field - field.mean()) / field.std().clamp_min(1e-6))
            self._fields[key] = torch.stack(out).to(device)
        return self._fields[key]

    def window(self, shape: Sequence[int], box: Sequence[slice], device: torch.device,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The field values on `box` (slices into a grid of `shape`) of a random scale, shifted randomly."""
        bank = self.fields(shape, device)
        scale = int(torch.randint(len(self.scales_mm), (1,), generator=generator))
        index = []
        for axis, (sl, n) in enumerate(zip(box, shape)):
            shift = int(torch.randint(n, (1,), generator=generator))
            idx = (torch.arange(sl.start, sl.stop, device=device) + shift) % n
            view = [1] * len(shape)
            view[axis] = len(idx)
            index.append(idx.reshape(view))
        return bank[scale][tuple(index)]
