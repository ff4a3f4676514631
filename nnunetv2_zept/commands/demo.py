"""`nnunetv2_zept demo`: the whole pipeline on synthetic CT in one command (docs/demo.md)."""
import sys

HELP = ("make synthetic pan-tumour CT, train ZePT Stage 1 and Stage 2 from scratch with the stock nnU-Net commands, "
        "install the sealed benchmark's reference models (ZePT and the like-for-like nnU-Net), predict fresh held-out "
        "cases with all of them, evaluate seen and zero-shot tumour types and write a report with figures (see "
        "docs/demo.md)")


def add_arguments(parser):
    from nnunetv2_zept.demo.settings import DemoSettings, demo_settings

    d = DemoSettings()
    longer, gpu = demo_settings("longer"), demo_settings("gpu")
    parser.add_argument("--output", "-o", default=None, metavar="DIR",
                        help="folder for everything the demo writes (nnUNet_raw/_preprocessed/_results inside it, "
                             "predictions, evaluation, report); default ./zept_demo")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier demo run in the output folder (a folder the demo did not write is "
                             "never touched)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="device for training and prediction (default cpu; cuda with --gpu)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true",
                        help="tiny run (5 + 6 cases on a coarse grid, a few training steps) to check the pipeline; "
                             "its numbers are meaningless (used by the test suite)")
    preset.add_argument("--longer", action="store_true",
                        help=f"the sealed benchmark's budget: {longer.stage1.total} Stage 1 + {longer.stage2.total} "
                             f"Stage 2 steps, and the like-for-like nnU-Net trained here too ({longer.baseline.total} "
                             "steps)")
    preset.add_argument("--gpu", action="store_true",
                        help=f"GPU preset, on cuda: the generator's 5 mm grid, nnU-Net's full U-Net width, "
                             f"{gpu.stage1.total} + {gpu.stage2.total} ZePT steps and {gpu.baseline.total} baseline steps")
    data = parser.add_argument_group("dataset")
    data.add_argument("--num-train", type=int, default=None, help=f"training cases (default {d.num_train})")
    data.add_argument("--num-test", type=int, default=None,
                      help=f"fresh held-out cases, as many per tumour type, the rest tumour-free (default {d.num_test}; "
                           "at least 7)")
    data.add_argument("--seed", type=int, default=None,
                      help=f"generator seed of the training cases (default {d.seed}: the reference models' training set)")
    data.add_argument("--held-out-seed", type=int, default=None,
                      help=f"generator seed of the held-out cases (default {d.held_out_seed}, used by no training)")
    ref = parser.add_argument_group("reference models")
    ref.add_argument("--no-reference", action="store_true", help="do not install and show the reference models")
    ref.add_argument("--reference-models", default=None, metavar="DIR",
                     help="folder of reference model zips (default: benchmarks/reference_models of the repository)")
    train = parser.add_argument_group("training length (steps = epochs x iterations per epoch)")
    train.add_argument("--iterations", type=int, default=None,
                       help=f"iterations (batches of 2 cases) per epoch, all models (default {d.iterations})")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"Stage 1 epochs; Stage 2 gets {d.stage2_epochs}/{d.stage1_epochs} of them unless "
                            f"--stage2-epochs is given (default {d.stage1_epochs})")
    train.add_argument("--stage2-epochs", type=int, default=None, help=f"Stage 2 epochs (default {d.stage2_epochs})")
    train.add_argument("--train-seed", type=int, default=None,
                       help=f"seed of every training here (default {d.train_seed}, the reference models' training "
                            "seed): the same seed trains the same models on the same machine")
    train.add_argument("--baseline", action="store_true",
                       help="also train the like-for-like nnU-Net here (nnUNetTrainerZePTBaselineAdamW; --longer does)")
    train.add_argument("--baseline-epochs", type=int, default=None,
                       help="baseline epochs (default: Stage 1 + Stage 2 epochs, i.e. the same number of steps)")
    train.add_argument("--fold", choices=["0", "all"], default=None,
                       help="nnU-Net fold: 0 holds out 20%% of the training cases for nnU-Net's validation "
                            "(default), all trains on every case")
    train.add_argument("--unet-features", type=int, default=None,
                       help=f"U-Net features in the first stage, both methods (default {d.unet_features}; 0 keeps "
                            "nnU-Net's plan, 32)")


def settings_from_args(args):
    from nnunetv2_zept.demo.settings import demo_settings

    preset = "quick" if args.quick else "longer" if args.longer else "gpu" if args.gpu else "default"
    stage2 = args.stage2_epochs
    if stage2 is None and args.epochs is not None:
        # keep the preset's split between the stages
        base = demo_settings(preset)
        stage2 = max(1, round(args.epochs * base.stage2_epochs / base.stage1_epochs))
    overrides = dict(output=args.output, overwrite=args.overwrite or None, device=args.device,
                     num_train=args.num_train, num_test=args.num_test, seed=args.seed,
                     held_out_seed=args.held_out_seed, train_seed=args.train_seed, iterations=args.iterations,
                     stage1_epochs=args.epochs, stage2_epochs=stage2, baseline_epochs=args.baseline_epochs,
                     fold=args.fold, train_baseline=True if args.baseline else None,
                     use_reference=False if args.no_reference else None, reference_models=args.reference_models)
    settings = demo_settings(preset, **overrides)
    if args.unet_features is not None:
        from dataclasses import replace

        settings = replace(settings, unet_features=args.unet_features or None).check()
    return settings


def run(args) -> int:
    from nnunetv2_zept.experiments.nnunet_runs import StepError
    from nnunetv2_zept.demo.pipeline import DemoError, run_demo

    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"nnunetv2_zept demo: error: {e}", file=sys.stderr)
        return 2
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("nnunetv2_zept demo: error: --device cuda but torch sees no CUDA GPU; use --device cpu",
                  file=sys.stderr)
            return 2
    try:
        run_demo(settings)
    except (DemoError, StepError) as e:
        print(f"nnunetv2_zept demo: error: {e}", file=sys.stderr)
        return 1
    return 0
