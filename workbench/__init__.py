"""Refusal workbench: refusal directions, the candidate sweep, surgical false-refusal ablation (Wang et al. 2025)."""

__version__ = "0.1.0"
