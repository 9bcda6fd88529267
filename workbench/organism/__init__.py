"""The refusal model organism: a small, reproducible LoRA safety fine-tune of SmolLM2-135M-Instruct."""
