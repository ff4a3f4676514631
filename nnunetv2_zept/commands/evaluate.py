"""`nnunetv2_zept evaluate`: DSC, NSD, voxel AUROC/FPR95 and case-level detection for a prediction folder."""
import os
import sys

HELP = ("evaluate a folder of `nnUNetv2_predict --save_probabilities` outputs against reference labels: DSC and NSD "
        "per class, voxel AUROC/FPR95 (body and host-organ region) and case-level detection AUROC per tumour type; "
        "writes summary.json, summary.md and ROC plots (see docs/evaluation.md)")


def add_arguments(parser):
    parser.add_argument("reference_folder", help="folder of reference label maps <case><file_ending> "
                                                 "(labelsTr/labelsTs style integer label maps)")
    parser.add_argument("prediction_folder", help="folder written by nnUNetv2_predict or nnunetv2_zept predict with "
                                                  "--save_probabilities (<case><file_ending> and <case>.npz; the "
                                                  "anomaly maps <case>_anomaly<file_ending> are not cases)")
    parser.add_argument("-djfile", "--dataset-json", dest="dataset_json", required=True,
                        help="dataset.json of the model's dataset (labels, file_ending, optional zept block)")
    parser.add_argument("-o", "--output-folder", dest="output_folder", default=None,
                        help="where summary.json, summary.md and roc_*.png go "
                             "(default: <prediction_folder>/zept_evaluation)")
    parser.add_argument("--images", dest="images_folder", default=None,
                        help="optional CT images folder (imagesTs: <case>_0000<file_ending>); then the 'body' region of "
                             "the voxel AUROC is the body mask (HU > -500, holes filled) instead of the whole volume")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="evaluate only these case ids (default: every prediction in the folder)")
    parser.add_argument("--tolerance", nargs="+", default=None, metavar="CLASS=MM",
                        help="NSD tolerance per class, e.g. --tolerance liver=7 pancreas_tumour=2 "
                             "(defaults: MSD values by class name, else --default-tolerance)")
    parser.add_argument("--default-tolerance", type=float, default=2.0, metavar="MM",
                        help="NSD tolerance for classes without an MSD default (default 2 mm)")
    parser.add_argument("--bins", type=int, default=10_000,
                        help="score histogram bins (equal in logit) for voxel AUROC/FPR95 (default 10000)")
    parser.add_argument("--min-lesion-mm3", type=float, default=50.0,
                        help="tumour score: minimum lesion core volume in mm^3 (default 50)")
    parser.add_argument("--host-margin-mm", type=float, default=5.0,
                        help="growth of the host organ for the tumour score and the host-region AUROC (default 5 mm)")
    parser.add_argument("--boundary-mm", type=float, default=2.0,
                        help="tumour score: half-width of the organ-surface band whose voxels do not count towards "
                             "lesion volume (default 2 mm; 0 switches it off)")
    parser.add_argument("--min-host-fraction", type=float, default=0.1,
                        help="tumour score: pieces of the predicted host organ smaller than this share of its "
                             "largest piece are not searched (default 0.1; 0 keeps every piece)")
    parser.add_argument("--no-plots", action="store_true", help="skip the ROC figures")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace summary.json/summary.md of an earlier evaluation in the output folder")


def run(args) -> int:
    from nnunetv2_zept.evaluation.case_io import EvaluationInputError
    from nnunetv2_zept.evaluation.folder_evaluation import evaluate_folder
    from nnunetv2_zept.evaluation.tolerances import parse_tolerance_args
    from nnunetv2_zept.roles import ZePTConfigError
    from nnunetv2_zept.tumour_score import TumourScoreSettings

    output = args.output_folder or os.path.join(args.prediction_folder, "zept_evaluation")
    try:
        settings = TumourScoreSettings(min_lesion_volume_mm3=args.min_lesion_mm3, host_margin_mm=args.host_margin_mm,
                                       boundary_mm=args.boundary_mm, min_host_fraction=args.min_host_fraction)
        summary = evaluate_folder(args.reference_folder, args.prediction_folder, args.dataset_json, output,
                                  case_ids=args.cases, tolerances_mm=parse_tolerance_args(args.tolerance),
                                  default_tolerance_mm=args.default_tolerance, n_bins=args.bins,
                                  score_settings=settings, overwrite=args.overwrite, plots=not args.no_plots,
                                  verbose=True, images_folder=args.images_folder)
    except (EvaluationInputError, ZePTConfigError, ValueError) as e:
        print(f"nnunetv2_zept evaluate: error: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(output, "summary.md")) as f:
        print(f.read())
    print(f"written: {os.path.join(output, 'summary.json')}, summary.md"
          + (f", {len(summary.get('roc_plots', []))} ROC plot(s)" if summary.get("roc_plots") else ""))
    return 0
