"""The method as pure math: refusal scores, KL, partial orthogonalization, candidate grids, the selection rule.

No model, no files: every other layer of the workbench calls these."""
