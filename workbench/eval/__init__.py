"""Measuring a model: refusal scores and perplexity from forward passes (`scoring`), greedy generation
(`generation`), refusal judges (`judge`), intervals (`stats`), capability tasks (`capability`). No run directory."""
