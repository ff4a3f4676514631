"""`nnunetv2_zept merge`: several nnU-Net raw datasets -> one ZePT region dataset with partial labels."""
import sys

HELP = ("merge nnU-Net raw datasets (MSD tasks, KiTS, multi-organ sets) into one ZePT region dataset: one shared "
        "class vocabulary, one case source per input, zero-shot tumour types held out as test cases; written as a "
        "NEW DatasetNNN_Name in nnUNet_raw, inputs are never changed")

EPILOG = """example (the paper's MSD zero-shot protocol, docs/recipes/msd-zero-shot.md):
  nnunetv2_zept merge -i 3 9 220 140 141 142 6 7 8 10 --test 6 7 8 10 -o 600 --name ZePTMSDZeroShot \\
      --mapping mapping.json --prefix-case-ids --dry-run
Inputs are dataset ids or names in nnUNet_raw, or dataset folder paths. See docs/dataset.md (merging)."""


def add_arguments(parser):
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("-i", "--inputs", nargs="+", required=True, metavar="DATASET",
                        help="input datasets: id (3), name (Liver), full folder name or a folder path")
    parser.add_argument("-o", required=True, type=int, metavar="NEW_ID",
                        help="id of the merged dataset; must not be used in nnUNet_raw/_preprocessed/_results")
    parser.add_argument("--name", required=True, help="name part of the new folder DatasetNNN_<name>")
    parser.add_argument("--test", nargs="+", default=[], metavar="DATASET",
                        help="inputs whose cases are zero-shot test cases (written to imagesTs/labelsTs); tumour "
                             "types that only they annotate become zero-shot")
    parser.add_argument("--zero-shot", nargs="+", action="extend", default=[], metavar="CLASS", dest="zero_shot",
                        help="further tumour types to hold out as zero-shot (class names or synonyms)")
    parser.add_argument("--zero-shot-voxels", choices=("error", "host"), default="error", dest="zero_shot_voxels",
                        help="zero-shot voxels in a training input: stop with an error (default), or relabel them as "
                             "their host organ")
    parser.add_argument("--mapping", default=None, metavar="JSON",
                        help='label -> class per input: {"Dataset011_WORD": {"intestine": "small_bowel", '
                             '"adrenal": null}, "*": {...}}; null drops a label')
    parser.add_argument("--host", nargs="+", action="append", default=[], metavar="NAME",
                        help="TUMOUR ORGAN [ORGAN ...]: host organ(s) of a tumour class (repeatable)")
    parser.add_argument("--text", nargs=2, action="append", default=[], metavar=("CLASS", "TEXT"),
                        help="knowledge text for CLASS (repeatable); needed for classes without a built-in text")
    parser.add_argument("--prefix-case-ids", action="store_true",
                        help="prefix every case id with its source name (needed when inputs share case ids)")
    parser.add_argument("--link", choices=("auto", "hard", "symbolic", "copy"), default="auto",
                        help="how images are placed: hard link, else symbolic link, else copy (auto, default)")
    parser.add_argument("--orientation", default=None, metavar="CODE",
                        help="write every case in this axis orientation (SimpleITK letters, e.g. LPS); needed when "
                             "the inputs' cases are stored in different orientations (the others are copied, reoriented)")
    parser.add_argument("-np", type=int, default=1, dest="num_processes",
                        help="worker processes for checking and writing cases (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")


def run(args) -> int:
    from nnunetv2_zept.merging import MergeError, MergeOptions, build_plan, describe_plan, write_plan
    from nnunetv2_zept.roles import ZePTConfigError

    from nnunetv2_zept.commands.convert import host_arguments

    try:
        hosts = host_arguments(args.host, MergeError)
        options = MergeOptions(inputs=args.inputs, target_id=args.o, name=args.name, test_inputs=args.test,
                               zero_shot=args.zero_shot, mapping_file=args.mapping, hosts=hosts,
                               texts={c: t for c, t in args.text}, zero_shot_voxels=args.zero_shot_voxels,
                               prefix_case_ids=args.prefix_case_ids, link=args.link,
                               num_processes=args.num_processes, orientation=args.orientation)
        plan = build_plan(options)
        print(describe_plan(plan))
        if args.dry_run:
            print("\n--dry-run: nothing was written")
            return 0
        result = write_plan(plan)
    except (MergeError, ZePTConfigError) as e:
        print(f"nnunetv2_zept merge: error: {e}", file=sys.stderr)
        return 1
    links = ", ".join(f"{n} {kind}" for kind, n in sorted(result.links.items()))
    print(f"\nwrote {result.folder}\n  images: {links} (linked files share their content with the inputs: replace "
          "them, never edit them in place)")
    if result.side_split_cases:
        print(f"  label maps split by side in {result.side_split_cases} case(s)")
    print(f"  provenance: {result.folder / 'merge.json'}")
    print(f"\nnext: nnUNetv2_plan_and_preprocess -d {args.o} -c 3d_fullres --verify_dataset_integrity")
    return 0
