"""The `nnunetv2_zept` command: one entry point, one module per subcommand.

Each subcommand lives in `nnunetv2_zept/commands/<name>.py` and defines `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`.  Modules are imported only when their
subcommand runs, so `nnunetv2_zept --help` stays fast.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": "demo",
    "convert": "convert",
    "merge": "merge",
    "texts": "texts",
    "evaluate": "evaluate",
    "cv-report": "cv_report",
    "predict": "predict",
    "env": "env",
}

SHORT_HELP = {
    "demo": "make the synthetic pan-tumour CT dataset, train both stages and a plain nnU-Net baseline, "
            "predict, evaluate and write a report",
    "convert": "turn a plain multi-label nnU-Net dataset into a ZePT region dataset (writes a new dataset)",
    "merge": "merge nnU-Net datasets (MSD, KiTS, multi-organ sets) into one ZePT region dataset with partial "
             "labels and zero-shot test cases (writes a new dataset)",
    "texts": "show the knowledge text and text encoder each class of a dataset gets; precompute embeddings",
    "evaluate": "DSC, NSD, AUROC, FPR95 and case-level detection per class for a prediction folder",
    "cv-report": "leaderboard table of a trainer's cross-validation folds (ZePT metrics beside nnU-Net's "
                 "summary): Markdown, JSON and a plot",
    "predict": "predict NIfTI/NRRD/MHA files or DICOM series: label maps, anomaly maps, tumour scores, DICOM SEG",
    "env": "print the `export nnUNet_extTrainer=...` line (for setups where .pth start-up hooks do not run)",
}


def _load(name):
    return importlib.import_module(f"nnunetv2_zept.commands.{SUBCOMMANDS[name]}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="nnunetv2_zept", description="ZePT for nnU-Net v2")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        sub.add_parser(name, help=SHORT_HELP[name], add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_help(sys.stderr)
            print(f"\nnnunetv2_zept: unknown command {argv[0]!r}; choose one of {', '.join(SUBCOMMANDS)}",
                  file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name = argv[0]
    module = _load(name)
    sp = argparse.ArgumentParser(prog=f"nnunetv2_zept {name}", description=getattr(module, "HELP", SHORT_HELP[name]))
    module.add_arguments(sp)
    args = sp.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
