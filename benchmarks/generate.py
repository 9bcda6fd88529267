"""Generation speed under an intervention: the hooked bridge vs the weight-edited model vs the unedited model.

    python benchmarks/generate.py [--model smollm2-135m-safety] [--n 32] [--batch-size 16] [--max-new-tokens 64]

One process, same prompts, greedy. Three backends generate the same completions:
(a) the hooked TransformerLens bridge with ablation hooks at every layer (our KV-cached loop),
(b) a plain transformers copy with the direction orthogonalized into its weights (`model.generate`),
(c) the unedited plain transformers model (`model.generate`).
Each is timed `--repeats` times (interleaved, best taken) and reported in generated tokens per second; ends with
`generation speed ratio (intervened/unedited): <ratio>` where "intervened" is the fastest way the workbench
generates under the intervention.
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from workbench.data import load_prompts  # noqa: E402
from workbench.eval.generation import greedy_generate, plain_greedy_generate, stop_ids  # noqa: E402
from workbench.interventions.export import plain_hf_model  # noqa: E402
from workbench.interventions.hooks import Ablation, applied  # noqa: E402
from workbench.interventions.weight_edit import orthogonalize_weights_  # noqa: E402
from workbench.models import load_model  # noqa: E402


def count_tokens(lm, texts: list[str]) -> int:
    return sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-safety")
    parser.add_argument("--prompts", default="bundled_pseudo_harmful_test")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model)
    prompts = [p.instruction for p in load_prompts(args.prompts, limit=args.n)]
    torch.manual_seed(0)
    direction = torch.randn(lm.info.d_model)  # any direction costs the same; the point is the machinery
    ablation = Ablation(direction)
    unedited = plain_hf_model(lm)
    edited = plain_hf_model(lm)
    orthogonalize_weights_(edited, direction)
    assert stop_ids(lm.tokenizer)

    def hooked():
        with applied(lm, ablation):
            return greedy_generate(lm, prompts, args.max_new_tokens, args.batch_size, progress=False)

    runs = {
        "hooked bridge (ablation hooks)": hooked,
        "weight-edited, transformers generate": lambda: plain_greedy_generate(
            edited, lm.chat, prompts, args.max_new_tokens, args.batch_size, progress=False),
        "unedited, transformers generate": lambda: plain_greedy_generate(
            unedited, lm.chat, prompts, args.max_new_tokens, args.batch_size, progress=False),
    }
    best: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                outputs[name] = fn()
                seconds = time.perf_counter() - start
                rate = count_tokens(lm, outputs[name]) / seconds
                best[name] = max(best.get(name, 0.0), rate)
    print(f"model {args.model}; {len(prompts)} prompts, batch {args.batch_size}, ≤{args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    for name, rate in best.items():
        print(f"{name:40s} {rate:8.1f} tokens/s")
    same = outputs["hooked bridge (ablation hooks)"] == outputs["weight-edited, transformers generate"]
    print(f"hooked and weight-edited completions identical: {'yes' if same else 'no'}")
    intervened = max(best["hooked bridge (ablation hooks)"], best["weight-edited, transformers generate"])
    print(f"generation speed ratio (intervened/unedited): {intervened / best['unedited, transformers generate']:.2f}")


if __name__ == "__main__":
    main()
