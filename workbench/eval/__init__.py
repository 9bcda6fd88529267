"""Measuring a model: refusal scores and perplexity from forward passes (`scoring`), greedy generation
(`generation`), where evaluate generates (`backends`: in-process or an OpenAI-compatible server), refusal judges
(`judge`), intervals (`stats`), capability tasks (`capability`). No run directory."""
