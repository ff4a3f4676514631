"""`nnunetv2_zept texts`: which knowledge text and text encoder each class of a dataset gets;
`--precompute` writes the embedding cache into the preprocessed dataset folder."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

HELP = "show the knowledge text and text encoder each class of a dataset gets; precompute embeddings"


def add_arguments(parser):
    parser.add_argument("-d", "--dataset", help="dataset id or name (e.g. 3 or Dataset003_Liver); its dataset.json "
                                                "is read from nnUNet_preprocessed or nnUNet_raw")
    parser.add_argument("--dataset_json", help="path of a dataset.json to use instead of -d")
    parser.add_argument("--encoder", help="text encoder spec overriding NNUNETV2_ZEPT_TEXT_ENCODER and "
                                          "zept.text_encoder: minilm | file:PATH | open_clip:MODEL:TAG_OR_PATH | auto")
    parser.add_argument("--precompute", action="store_true",
                        help="encode the texts and write the cache to $nnUNet_preprocessed/<dataset>/zept_text_embeddings/")
    parser.add_argument("--full", action="store_true", help="print whole texts instead of their first line")
    parser.add_argument("--list", action="store_true", help="list the built-in knowledge classes and their synonyms")


def _find_dataset(dataset: str):
    """(dataset.json dict, its path, preprocessed folder or None) for a dataset id or name."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(int(dataset) if dataset.isdigit() else dataset)
    except RuntimeError as e:
        raise SystemExit(f"nnunetv2_zept texts: {e}")
    roots = [("nnUNet_preprocessed", os.environ.get("nnUNet_preprocessed")), ("nnUNet_raw", os.environ.get("nnUNet_raw"))]
    pre = Path(roots[0][1]) / name if roots[0][1] else None
    for _, root in roots:
        if root and (Path(root) / name / "dataset.json").is_file():
            path = Path(root) / name / "dataset.json"
            return json.loads(path.read_text()), path, pre if pre is not None and pre.is_dir() else None
    raise SystemExit(f"nnunetv2_zept texts: no dataset.json for {name} in nnUNet_preprocessed or nnUNet_raw")


def _role_of(roles, name):
    from nnunetv2_zept.knowledge import BACKGROUND_TISSUES, CATCH_ALL_BACKGROUND

    if name in roles.names:
        c = roles.names.index(name)
        if c in roles.organs:
            return "organ"
        hosts = ", ".join(roles.names[h] for h in roles.hosts.get(c, []))
        return ("zero-shot tumour" if c in roles.zero_shot else "seen tumour") + (f" in {hosts}" if hosts else "")
    if name in BACKGROUND_TISSUES:
        return "background tissue"
    if name == CATCH_ALL_BACKGROUND:
        return "catch-all background (one background query)"
    return "?"


def _list_builtin():
    from nnunetv2_zept.knowledge.texts import builtin_table

    for canonical, e in builtin_table().entries.items():
        print(f"{canonical:24s} [{e.kind}]  synonyms: {', '.join(e.synonyms)}")
    return 0


def run(args) -> int:
    if args.list:
        return _list_builtin()
    if not args.dataset and not args.dataset_json:
        print("nnunetv2_zept texts: give -d DATASET (or --dataset_json PATH, or --list)")
        return 2
    from nnunetv2_zept.knowledge import dataset_text_classes
    from nnunetv2_zept.knowledge.cache import cache_path, class_text_embeddings
    from nnunetv2_zept.knowledge.encoders import TextEncoderError
    from nnunetv2_zept.knowledge.selection import resolve_encoder_spec, spec_identity
    from nnunetv2_zept.knowledge.texts import describe_class
    from nnunetv2_zept.roles import ZePTConfigError, roles_from_dataset_json

    if args.dataset_json:
        path = Path(args.dataset_json)
        dataset_json, preprocessed = json.loads(path.read_text()), None
    else:
        dataset_json, path, preprocessed = _find_dataset(args.dataset)
    try:
        roles = roles_from_dataset_json(dataset_json)
    except ZePTConfigError as e:
        print(f"nnunetv2_zept texts: {e}")
        return 1
    print(f"dataset.json: {path}")
    print(roles.describe())
    classes = dataset_text_classes(roles)
    missing = []
    print()
    for name in classes:
        try:
            d = describe_class(name, roles.texts)
        except ZePTConfigError as e:
            missing.append(str(e))
            print(f"{name}  [{_role_of(roles, name)}]  -> NO TEXT")
            continue
        canonical = d["canonical"] or "(none)"
        print(f"{name}  [{_role_of(roles, name)}]  built-in class: {canonical}; text from {d['source']}")
        body = d["text"] if args.full else textwrap.shorten(d["text"], 150, placeholder=" ...")
        print(textwrap.indent(textwrap.fill(body, 100), "    "))
    try:
        spec = resolve_encoder_spec(args.encoder, dataset_json)
        identity = spec_identity(spec)
    except TextEncoderError as e:
        print(f"\ntext encoder: NOT AVAILABLE: {e}")
        return 1
    print(f"\ntext encoder: {identity}\n    {spec.describe()}")
    if preprocessed is not None:
        cache = cache_path(preprocessed, identity)
        print(f"embedding cache: {cache} ({'present' if cache.is_file() else 'not written yet'})")
    if missing:
        print("\n" + "\n".join(missing))
        return 1
    if args.precompute:
        if preprocessed is None:
            print("nnunetv2_zept texts: --precompute needs the preprocessed dataset folder; run "
                  "nnUNetv2_plan_and_preprocess first (or give -d with nnUNet_preprocessed set)")
            return 1
        result = class_text_embeddings(classes, roles.texts, cache_folder=preprocessed,
                                       encoder_spec=args.encoder, dataset_json=dataset_json)
        print(f"embeddings: {result.embeddings.shape[0]} classes x {result.dim} ({result.encoder}), "
              f"text hash {result.text_hash[:16]}, {'cached already' if result.from_cache else 'computed'}")
    return 0
