"""`nnunetv2_zept convert`: write a ZePT region dataset next to a plain multi-label nnU-Net dataset."""
import sys

HELP = ("turn a plain multi-label nnU-Net raw dataset (one label per structure, tumours as their own labels) "
        "into a ZePT region dataset, written as a NEW DatasetNNN_Name in nnUNet_raw; the source is never changed")

EPILOG = """examples:
  nnunetv2_zept convert -d 3 -o 503
  nnunetv2_zept convert -d Dataset010_LiverKidney -o 510 --name LiverKidneyZePT \\
      --zero-shot kidney_cyst --text kidney_cyst "Simple renal cyst: round, water density (0-20 HU) ..." \\
      --case-source lits LITS_ liver liver_tumour --case-source kits KITS_ kidney kidney_tumour
See docs/dataset.md for the `zept` block, the --roles file and every error message."""


def add_arguments(parser):
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("-d", required=True, metavar="SOURCE",
                        help="source dataset in nnUNet_raw: id (3), full name (Dataset003_Liver) or name (Liver)")
    parser.add_argument("-o", required=True, type=int, metavar="NEW_ID",
                        help="id of the new dataset; must not be used in nnUNet_raw/_preprocessed/_results")
    parser.add_argument("--name", default=None,
                        help="name part of the new folder DatasetNNN_<name> (default: source name + 'ZePT')")
    parser.add_argument("--zero-shot", nargs="+", action="extend", default=[], metavar="CLASS", dest="zero_shot",
                        help="tumour classes to declare zero-shot (never trained with masks); a name that is not a "
                             "source label becomes a new class with the next unused label id")
    parser.add_argument("--text", nargs=2, action="append", default=[], metavar=("CLASS", "TEXT"),
                        help="knowledge text for CLASS (repeatable); overrides the built-in text")
    parser.add_argument("--host", nargs="+", action="append", default=[], metavar="NAME",
                        help="TUMOUR ORGAN [ORGAN ...]: host organ(s) of a tumour class (repeatable); needed when "
                             "the host cannot be read from the tumour's name")
    parser.add_argument("--case-source", nargs="+", action="append", default=[], metavar="ARG", dest="case_source",
                        help="NAME PREFIX CLASS [CLASS ...]: cases whose id starts with PREFIX annotate only these "
                             "classes (partial labels; repeatable). Cases of no source annotate every class")
    parser.add_argument("--roles", default=None, metavar="JSON",
                        help="JSON file with a (partial) `zept` block: `organs` replaces the inferred list, "
                             "`tumours`/`texts`/`sources` entries replace the inferred ones; the options above "
                             "apply on top")


def host_arguments(values, error):
    """`--host TUMOUR ORGAN [ORGAN ...]` (repeated) -> {tumour: [organs]}; `error` is the command's error class."""
    hosts = {}
    for h in values:
        if len(h) < 2:
            raise error(f"--host {' '.join(h)!r} needs a tumour and at least one organ. "
                        "Fix: write --host liver_tumour liver")
        hosts[h[0]] = h[1:]
    return hosts


def _options(args):
    from nnunetv2_zept.conversion import CaseSourceSpec, ConversionError, ConversionOptions, load_roles_override

    hosts = host_arguments(args.host, ConversionError)
    sources = []
    for s in args.case_source:
        if len(s) < 3:
            raise ConversionError(f"--case-source {' '.join(s)!r} needs NAME PREFIX and at least one CLASS. "
                                  "Fix: write e.g. --case-source lits LITS_ liver liver_tumour")
        sources.append(CaseSourceSpec(s[0], s[1], s[2:]))
    return ConversionOptions(
        zero_shot=list(args.zero_shot), texts={c: t for c, t in args.text}, hosts=hosts,
        roles_override=load_roles_override(args.roles) if args.roles else None, case_sources=sources)


def run(args) -> int:
    from nnunetv2_zept.conversion import ConversionError, convert_dataset, region_table
    from nnunetv2_zept.roles import ZePTConfigError

    try:
        options = _options(args)
        result = convert_dataset(args.d, args.o, args.name, options)
    except (ConversionError, ZePTConfigError) as e:
        print(f"nnunetv2_zept convert: error: {e}", file=sys.stderr)
        return 1
    dj = result.dataset_json
    print(f"\nwrote {result.folder}")
    print(f"  images: {result.linked} hard-linked, {result.copied} copied; label files copied unchanged: "
          f"{result.labels_copied}")
    print("  regions (one sigmoid channel each; later rows paint over earlier ones in exported label maps):")
    print(region_table(dj, result.roles))
    print(result.roles.describe())
    if result.copied:
        print("note: some images were copied (hard links need the same file system)")
    if result.linked:
        print("note: images are hard links shared with the source: replace them, never edit them in place")
    print(f"\nnext: nnUNetv2_plan_and_preprocess -d {args.o} -c 3d_fullres --verify_dataset_integrity")
    return 0
