"""The one-command demo (`nnunetv2_zept demo`, docs/demo.md): synthetic pan-tumour CT, the stock
nnU-Net commands for planning, ZePT Stage 1 + Stage 2 and a plain nnU-Net baseline, prediction of
held-out cases, evaluation and a Markdown report with figures."""
from nnunetv2_zept.demo.settings import PRESETS, DemoSettings, TrainingLength, demo_settings


def run_demo(settings):
    """See `nnunetv2_zept.demo.pipeline.run_demo` (imported lazily: matplotlib, SimpleITK)."""
    from nnunetv2_zept.demo.pipeline import run_demo as _run

    return _run(settings)


__all__ = ["run_demo", "demo_settings", "DemoSettings", "TrainingLength", "PRESETS"]
