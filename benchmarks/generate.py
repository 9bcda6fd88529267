"""Generation speed under an intervention: the hooked bridge vs the weight-edited model vs the unedited model.

    python benchmarks/generate.py [--model smollm2-135m-safety] [--direction FILE] [--n-prompts 16]
                                  [--batch-size 8] [--max-new-tokens 64] [--repeats 2] [--threads N]

One process, the same prompts in the same batches, greedy. Four variants:
(a) the hooked TransformerLens bridge with ablation hooks at every layer (our KV-cached loop),
(b) a plain transformers copy with the direction orthogonalized into its weights (`model.generate`); this unties a
    tied embedding (the embedding is a residual writer and is edited, the unembedding is not), so it carries one
    more vocab × d_model matrix,
(c) the unedited plain transformers model (`model.generate`), embedding tied as loaded,
(d) the unedited model untied by copy (`untie_embeddings_`, no edit): (b)'s shapes with (c)'s numbers.

Speed (fixed length, the figure the last line reports): every variant generates exactly `--max-new-tokens` tokens per
prompt (end-of-turn tokens forbidden until then: `min_new_tokens == max_new_tokens`), so all do the same work;
tokens/s = prompts × max-new-tokens / seconds. Natural length (stop at end-of-turn, as evaluation generates): the
edited model answers prompts the unedited one refuses in a few tokens, so its completions are longer and its
batches pad differently; tokens/s counts completion tokens (end-of-turn not counted) and the mean completion length
of each variant is shown beside it. Each run is timed `--repeats` times, the variants interleaved, best taken, after
one untimed warm-up batch per variant. "Intervened" is the faster of (a) and (b), the fastest way the workbench
generates under the intervention. Ends with `generation speed ratio (intervened/unedited): <ratio>` (fixed length).

The direction is `--direction` (a `directions/lam_<λ>.safetensors` of a run on this model), by default the λ = 1
selection of `runs/default` when that run is of this model, else a seeded random direction (same cost at fixed
length; at natural length a random direction barely changes what the model says).
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from workbench.data import load_prompts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.eval.generation import hooked_generate, plain_generate, stop_ids  # noqa: E402
from workbench.interventions.directions import load_direction  # noqa: E402
from workbench.interventions.export import plain_hf_model  # noqa: E402
from workbench.interventions.hooks import Ablation, applied  # noqa: E402
from workbench.interventions.weight_edit import orthogonalize_weights_, untie_embeddings_  # noqa: E402
from workbench.models import load_model  # noqa: E402

DEFAULT_DIRECTION = Path("runs/default/directions/lam_1.0.safetensors")
HOOKED, EDITED, UNEDITED, UNTIED = (
    "hooked bridge (ablation hooks)",
    "weight-edited, transformers generate",
    "unedited, transformers generate",
    "unedited untied copy, generate",
)


def choose_direction(lm, path: str | None) -> tuple[torch.Tensor, str]:
    if path is not None:
        direction, meta = load_direction(path, lm.info.fingerprint, lm.info.d_model)
        return direction, f"{path} (λ={meta.get('lam')}, layer {meta.get('layer')}, position {meta.get('pos')})"
    if DEFAULT_DIRECTION.exists():
        try:
            return choose_direction(lm, str(DEFAULT_DIRECTION))
        except WorkbenchError as error:  # a run of another model: fall back to a random direction, saying why
            reason = str(error)
    else:
        reason = f"no {DEFAULT_DIRECTION}"
    torch.manual_seed(0)
    return torch.randn(lm.info.d_model), f"seeded random ({reason})"


def parameter_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, bytes) counting a shared (tied) tensor once."""
    params = list(model.parameters())  # `parameters()` yields a tied tensor once
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-safety")
    parser.add_argument("--direction", default=None, help="a directions/lam_<λ>.safetensors of a run on --model")
    parser.add_argument("--prompts", default="bundled_pseudo_harmful_test")
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model)
    prompts = [p.instruction for p in load_prompts(args.prompts, limit=args.n_prompts)]
    direction, direction_note = choose_direction(lm, args.direction)
    ablation = Ablation(direction)
    unedited = plain_hf_model(lm)
    edited = plain_hf_model(lm)
    orthogonalize_weights_(edited, direction)
    untied = plain_hf_model(lm)
    untie_embeddings_(untied)
    assert stop_ids(lm.tokenizer)
    n, size = args.max_new_tokens, args.batch_size

    def variant(name: str, min_new_tokens: int, instructions: list[str] = prompts, tokens: int = n):
        if name == HOOKED:
            def generate():
                with applied(lm, ablation):
                    return hooked_generate(lm, instructions, tokens, size, return_ids=True, progress=False,
                                           min_new_tokens=min_new_tokens)
            return generate
        model = {EDITED: edited, UNEDITED: unedited, UNTIED: untied}[name]
        return lambda: plain_generate(model, lm.chat, instructions, tokens, size, return_ids=True, progress=False,
                                      min_new_tokens=min_new_tokens)

    fixed_names, natural_names = (HOOKED, EDITED, UNEDITED, UNTIED), (HOOKED, EDITED, UNEDITED)
    fixed: dict[str, float] = {}
    natural: dict[str, float] = {}
    fixed_ids: dict[str, list[list[int]]] = {}
    natural_ids: dict[str, list[list[int]]] = {}
    with torch.inference_mode():
        for name in fixed_names:  # warm-up: one short batch each, untimed
            variant(name, 4, prompts[:size], 4)()
        for _ in range(args.repeats):
            for name in fixed_names:
                start = time.perf_counter()
                fixed_ids[name] = variant(name, n)()
                rate = len(prompts) * n / (time.perf_counter() - start)
                assert all(len(row) == n for row in fixed_ids[name]), "fixed-length generation stopped early"
                fixed[name] = max(fixed.get(name, 0.0), rate)
            for name in natural_names:
                start = time.perf_counter()
                natural_ids[name] = variant(name, 0)()
                rate = sum(map(len, natural_ids[name])) / (time.perf_counter() - start)
                natural[name] = max(natural.get(name, 0.0), rate)

    print(f"model {args.model}; {len(prompts)} prompts ({args.prompts}), batch {size}, {n} new tokens, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}; direction {direction_note}")
    print(f"fixed length (exactly {n} new tokens per prompt, end-of-turn ignored; equal work):")
    for name in fixed_names:
        print(f"  {name:40s} {fixed[name]:8.1f} tokens/s")
    print(f"natural length (stop at end-of-turn, ≤ {n} new tokens, as evaluation generates):")
    for name in natural_names:
        mean_length = sum(map(len, natural_ids[name])) / len(prompts)
        print(f"  {name:40s} {natural[name]:8.1f} tokens/s   mean completion {mean_length:5.1f} tokens")
    tied_params, tied_bytes = parameter_bytes(unedited)
    untied_params, untied_bytes = parameter_bytes(edited)
    head = edited.get_output_embeddings().weight
    print(f"untied embedding: tied {tied_params / 1e6:.1f} M parameters ({tied_bytes / 2**20:.0f} MiB), edited "
          f"{untied_params / 1e6:.1f} M ({untied_bytes / 2**20:.0f} MiB): +{tuple(head.shape)} {head.dtype} "
          f"unembedding = {(untied_bytes - tied_bytes) / 2**20:.0f} MiB "
          f"(+{100 * (untied_bytes - tied_bytes) / tied_bytes:.0f}%); "
          f"speed untied/tied {fixed[UNTIED] / fixed[UNEDITED]:.2f} (fixed length)")
    for label, ids in (("fixed", fixed_ids), ("natural", natural_ids)):
        same = ids[HOOKED] == ids[EDITED]
        print(f"hooked and weight-edited completions identical ({label} length): {'yes' if same else 'no'}")
    natural_ratio = max(natural[HOOKED], natural[EDITED]) / natural[UNEDITED]
    print(f"natural-length speed ratio (intervened/unedited): {natural_ratio:.2f}")
    print(f"generation speed ratio (intervened/unedited): {max(fixed[HOOKED], fixed[EDITED]) / fixed[UNEDITED]:.2f}")


if __name__ == "__main__":
    main()
