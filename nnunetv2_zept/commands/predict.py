"""`nnunetv2_zept predict`: CTs (NIfTI/NRRD/MHA files, DICOM series folders) in; label maps,
anomaly maps, tumour-presence scores with lesions and optional DICOM SEG out.

The model is chosen like nnUNetv2_predict (-d/-c/-tr/-p, or the model folder with -m).  Every
input is processed even when another one fails; the exit code is 1 when any input failed and a
summary lists each failure.  See docs/prediction.md.
"""
import os
import sys

HELP = ("predict NIfTI/NRRD/MHA files or DICOM series with a trained model: label maps, anomaly maps, "
        "tumour-presence scores and lesions (JSON), optional per-class probabilities and DICOM SEG")


def add_arguments(parser):
    parser.add_argument("-i", "--input", nargs="+", required=True, metavar="INPUT",
                        help="CT inputs: image files (.nii.gz, .nii, .nrrd, .mha, .mhd) and/or folders that each "
                             "hold ONE DICOM CT series")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    model = parser.add_argument_group("model (either -m, or -d with -c/-tr/-p as for nnUNetv2_predict)")
    model.add_argument("-m", "--model", default=None,
                       help="trained model folder, e.g. $nnUNet_results/Dataset500_X/"
                            "nnUNetTrainerZePTStage2__nnUNetPlans__3d_fullres")
    model.add_argument("-d", "--dataset", default=None, help="dataset name or id (uses $nnUNet_results)")
    model.add_argument("-c", "--configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    model.add_argument("-tr", "--trainer", default="nnUNetTrainerZePTStage2",
                       help="trainer class (default nnUNetTrainerZePTStage2)")
    model.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    model.add_argument("-f", "--folds", nargs="+", default=None,
                       help="folds to ensemble (default: every fold_X with the checkpoint); 'all' for fold_all")
    model.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                       help="checkpoint file name (default checkpoint_final.pth)")
    parser.add_argument("--disable_tta", action="store_true",
                        help="no mirroring test-time augmentation (up to 8x faster, slightly less accurate)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a fraction of the patch "
                                                                     "(default 0.5, as nnU-Net)")
    parser.add_argument("-device", default="cuda" if _cuda_available_cheap() else "cpu",
                        choices=["cpu", "cuda", "mps"], help="device (default cuda if available, else cpu)")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write per-class probability images (<case>_probabilities/<class>.nii.gz) and "
                             "nnU-Net's <case>.npz/.pkl")
    parser.add_argument("--dicom-seg", "--dicom_seg", dest="dicom_seg", action="store_true",
                        help="also write a DICOM SEG (<case>_seg.dcm) referencing the series, for DICOM inputs")
    parser.add_argument("--min-lesion-mm3", type=float, default=None,
                        help="smallest lesion (core volume, mm^3) that counts for the tumour-presence score and "
                             "the lesion list (default: the library's, 50 mm^3)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs of the same case")
    parser.add_argument("--verbose", action="store_true", help="show nnU-Net's progress bars and tracebacks")


def _cuda_available_cheap() -> bool:
    # `--help` must stay fast: only look at torch when it is imported already or the driver is present
    return os.path.exists("/proc/driver/nvidia/version") or "CUDA_VISIBLE_DEVICES" in os.environ and \
        os.environ["CUDA_VISIBLE_DEVICES"] not in ("", "-1")


def _device(name: str):
    import torch

    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("nnunetv2_zept predict: -device cuda was requested but CUDA is not available; "
                             "use -device cpu")
        return torch.device("cuda")
    if name == "mps":
        return torch.device("mps")
    import multiprocessing

    torch.set_num_threads(multiprocessing.cpu_count())
    return torch.device("cpu")


def _output_folder_problem(output: str):
    if os.path.lexists(output) and not os.path.isdir(output):
        return f"-o {output} exists and is not a folder; pass a folder for the outputs (it is created if missing)"
    return None


def run(args) -> int:
    from nnunetv2_zept.prediction.inputs import describe_inputs
    from nnunetv2_zept.prediction.predictor import ModelError, build_predictor, model_folder_from_ids
    from nnunetv2_zept.prediction.runner import CasePredictor, PredictOptions, input_collision, predict_inputs
    from nnunetv2_zept.prediction_files import case_output_files
    from nnunetv2_zept.tumour_score import TumourScoreSettings

    def fail(message: str) -> int:
        print(f"nnunetv2_zept predict: error: {message}", file=sys.stderr)
        return 1

    if (args.model is None) == (args.dataset is None):
        print("nnunetv2_zept predict: give the model either as a folder (-m) or as -d DATASET [-c -tr -p]",
              file=sys.stderr)
        return 2
    # everything that can be checked without the model is checked before it loads (minutes on a CPU)
    try:
        settings = TumourScoreSettings() if args.min_lesion_mm3 is None else \
            TumourScoreSettings(min_lesion_volume_mm3=args.min_lesion_mm3)
    except ValueError as e:
        return fail(f"--min-lesion-mm3 {args.min_lesion_mm3:g} is not a lesion volume ({e}); pass 0 or more mm^3")
    if not args.step_size > 0 or args.step_size > 1:
        return fail(f"-step_size {args.step_size:g} must lie in (0, 1], a fraction of the patch size")
    problem = _output_folder_problem(args.output)
    if problem:
        return fail(problem)
    specs, early = describe_inputs(args.input)
    safe_specs = []
    for spec in specs:
        collision = input_collision(case_output_files(args.output, spec.case_id), specs)
        if collision:
            early.append((spec.path, f"{spec.path}: {collision}"))
        else:
            safe_specs.append(spec)
    specs = safe_specs
    if not specs:
        for _, msg in early:
            print(f"  - {msg}", file=sys.stderr)
        return fail(f"none of the {len(early)} input(s) can be predicted (see above); nothing was loaded or written")
    try:
        folder = args.model or model_folder_from_ids(args.dataset, args.configuration, args.trainer, args.plans)
        folder = os.path.abspath(folder)
        device = _device(args.device)
        print(f"Loading model {folder} (checkpoint {args.checkpoint}, device {device.type}) ...")
        predictor = build_predictor(folder, args.folds, args.checkpoint, device, use_mirroring=not args.disable_tta,
                                    tile_step_size=args.step_size, verbose=args.verbose, progress_bar=args.verbose)
        options = PredictOptions(args.output, save_probabilities=args.save_probabilities, dicom_seg=args.dicom_seg,
                                 overwrite=args.overwrite, score_settings=settings)
        cp = CasePredictor(predictor, folder, _folds_used(predictor, folder, args), args.checkpoint, options)
    except ModelError as e:
        return fail(str(e))
    print(f"  trainer {predictor.trainer_name}, configuration {cp.configuration}, folds "
          f"{', '.join(map(str, cp.folds))}, mirroring TTA {'on' if predictor.use_mirroring else 'off'}")
    print(f"  {cp.anomaly_message}")
    print(f"  {cp.roles_message}")
    if cp.reader_warning:
        print(f"  warning: {cp.reader_warning}")
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        return fail(f"cannot create the output folder {args.output}: {e.strerror or e}")
    reports, failures = predict_inputs(cp, specs, early, verbose=args.verbose)
    total = len(specs) + len(early)
    print(f"\nPredicted {len(reports)} of {total} input(s) into {os.path.abspath(args.output)}")
    if failures:
        print(f"{len(failures)} input(s) FAILED:", file=sys.stderr)
        for inp, msg in failures:
            print(f"  - {msg}", file=sys.stderr)
        return 1
    return 0


def _folds_used(predictor, folder, args):
    from nnunetv2_zept.prediction.predictor import check_model_folder

    return check_model_folder(folder, args.folds, args.checkpoint)
