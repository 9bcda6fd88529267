"""The refusal model organism: a small, reproducible LoRA safety fine-tune of SmolLM2-135M-Instruct.

Importing the package registers the organism's datasets (`vocabulary`: the harmless set without its trigger topic)."""

from workbench.organism import vocabulary  # noqa: F401  (registers bundled_harmless_test_no_food)
