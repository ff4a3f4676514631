"""nnunetv2_zept: ZePT (zero-shot pan-tumour segmentation in CT) as an nnU-Net v2 plugin.

This module is imported at interpreter start by the `nnunetv2_zept.pth` hook, so it must
stay import-light: no torch, no nnunetv2 here.
"""
from nnunetv2_zept._version import __version__

__all__ = ["__version__"]
