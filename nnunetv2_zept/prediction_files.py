"""Names of the files `nnunetv2_zept predict` writes per case, defined once for the command that
writes them and for `nnunetv2_zept evaluate`, which reads the same folder (docs/prediction.md)."""
import os
from typing import Dict

LABEL_MAP_ENDING = ".nii.gz"
ANOMALY_SUFFIX = "_anomaly"
PROBABILITIES_SUFFIX = "_probabilities"
DICOM_SEG_SUFFIX = "_seg.dcm"


def case_output_files(folder: str, case_id: str, anomaly: bool = True, probabilities: bool = True,
                      dicom_seg: bool = True) -> Dict[str, str]:
    """Output kind -> path; with every flag on, every file a case can have from any run."""
    files = {"label_map": os.path.join(folder, case_id + LABEL_MAP_ENDING),
             "report": os.path.join(folder, case_id + ".json")}
    if anomaly:
        files["anomaly_map"] = os.path.join(folder, case_id + ANOMALY_SUFFIX + LABEL_MAP_ENDING)
    if probabilities:
        files["probabilities"] = os.path.join(folder, case_id + PROBABILITIES_SUFFIX)
        files["probabilities_npz"] = os.path.join(folder, case_id + ".npz")
        files["properties_pkl"] = os.path.join(folder, case_id + ".pkl")
    if dicom_seg:
        files["dicom_seg"] = os.path.join(folder, case_id + DICOM_SEG_SUFFIX)
    return files


def anomaly_map_of(name: str, file_ending: str = LABEL_MAP_ENDING):
    """The case whose anomaly map `name` is (`<case>_anomaly<ending>`), else None."""
    tail = ANOMALY_SUFFIX + file_ending
    return name[: -len(tail)] if name.endswith(tail) and len(name) > len(tail) else None
