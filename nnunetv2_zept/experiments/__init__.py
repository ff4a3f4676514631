"""Experiment machinery shared by the demo and the benchmarks: running the stock nnU-Net commands
(nnunet_runs), the synthetic datasets they train on (synthetic_runs) and the plain baseline's
tumour-agnostic zero-shot score (baseline_scores)."""
