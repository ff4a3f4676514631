"""`nnunetv2_zept cv-report`: leaderboard table of a trainer's cross-validation folds."""
import os
import sys

HELP = ("score the validation predictions of a trainer's folds (nnU-Net's fold_X/validation, trained with --npz) "
        "with the ZePT metrics, optionally each fold's zero-shot test predictions too, and write a leaderboard "
        "table per fold and mean ± std, beside nnU-Net's own summary: cv_report.md, cv_report.json, cv_report.png")

EPILOG = """examples:
  nnunetv2_zept cv-report -d 600 -tr nnUNetTrainerZePTStage2 -f 0 1 2 3 4
  nnunetv2_zept cv-report -d 600 -tr nnUNetTrainerZePTStage2 --test-predictions zs_pred   # zs_pred/fold_X
See docs/evaluation.md (cross-validation report)."""


def add_arguments(parser):
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("-d", required=True, metavar="DATASET", help="dataset id or name (as for nnUNetv2_train)")
    parser.add_argument("-tr", default="nnUNetTrainerZePTStage2", metavar="TRAINER",
                        help="trainer class (default nnUNetTrainerZePTStage2)")
    parser.add_argument("-c", default="3d_fullres", metavar="CONFIGURATION", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", default="nnUNetPlans", metavar="PLANS", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-f", nargs="+", type=int, default=None, metavar="FOLD",
                        help="folds (default: every fold_X with a validation folder)")
    parser.add_argument("-o", "--output-folder", dest="output_folder", default=None,
                        help="where the report goes (default <results folder>/zept_cv_report)")
    parser.add_argument("--reference", default=None,
                        help="reference labels of the training cases (default $nnUNet_preprocessed/<dataset>/"
                             "gt_segmentations, what nnU-Net validates with)")
    parser.add_argument("--test-predictions", dest="test_predictions", default=None,
                        help="folder with one subfolder fold_X per fold: that fold's model's "
                             "nnUNetv2_predict --save_probabilities output on imagesTs (adds the zero-shot columns)")
    parser.add_argument("--test-labels", dest="test_labels", default=None,
                        help="reference labels of the test cases (default $nnUNet_raw/<dataset>/labelsTs)")
    parser.add_argument("--test-images", dest="test_images", default=None,
                        help="CT images of the test cases (imagesTs): the body region of the voxel AUROC becomes the "
                             "CT body mask (as `evaluate --images`)")
    parser.add_argument("--no-plots", action="store_true", help="skip cv_report.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output folder")


def run(args) -> int:
    from nnunetv2_zept.evaluation.case_io import EvaluationInputError
    from nnunetv2_zept.evaluation.cross_validation import cross_validation_report
    from nnunetv2_zept.roles import ZePTConfigError

    try:
        folder = _results_folder(args.d, args.tr, args.p, args.c)
        cross_validation_report(folder, folds=args.f, output_folder=args.output_folder,
                                reference_folder=args.reference, test_predictions=args.test_predictions,
                                test_labels=args.test_labels, test_images=args.test_images,
                                overwrite=args.overwrite, plots=not args.no_plots, verbose=True)
    except (EvaluationInputError, ZePTConfigError, ValueError) as e:
        print(f"nnunetv2_zept cv-report: error: {e}", file=sys.stderr)
        return 1
    output = args.output_folder or os.path.join(folder, "zept_cv_report")
    with open(os.path.join(output, "cv_report.md")) as f:
        print(f.read())
    print(f"written: {os.path.join(output, 'cv_report.md')}, cv_report.json"
          + ("" if args.no_plots else ", cv_report.png") + ", fold_X/ (per-fold evaluations)")
    return 0


def _results_folder(dataset: str, trainer: str, plans: str, configuration: str) -> str:
    if not os.environ.get("nnUNet_results"):
        raise ValueError("the environment variable nnUNet_results is not set; export it (the folder nnUNetv2_train "
                         "writes to)")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise ValueError(f"dataset {dataset!r} not found ({str(e).splitlines()[0]}); pass the id or name you trained "
                         "with") from None
    folder = get_output_folder(name, trainer, plans, configuration)
    if not os.path.isdir(folder):
        raise ValueError(f"no results folder {folder}; check -tr, -p and -c against what you trained")
    return folder
