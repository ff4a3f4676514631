"""Experiment machinery shared by the demo and the benchmarks: running the stock nnU-Net commands
(nnunet_runs), the synthetic datasets they train on (synthetic_runs), the plain baselines'
tumour-agnostic zero-shot score (baseline_scores), the reference models the demo installs
(reference_models), and nnU-Net plans for networks of a chosen patch (example_plans)."""
