# The only module in the folder that nnUNet_extTrainer points to.  nnU-Net imports it as a
# top-level module and drops it from sys.modules after the lookup; the classes keep their
# real home (`nnunetv2_zept.trainers`), so pickling, DDP spawn and worker pools work.
# Nothing else may be placed in this folder: nnU-Net imports every module in it.
from nnunetv2_zept.trainers import *  # noqa: F401,F403
from nnunetv2_zept.trainers import __all__  # noqa: F401
