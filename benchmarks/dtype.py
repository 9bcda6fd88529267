"""bfloat16 vs float32 on CPU: refusal scores and speed of the forward pass every stage of the method uses.

    python benchmarks/dtype.py [--model qwen2.5-coder-1.5b-instruct] [--sets harmful_train harmless_train ...]
                               [--n 32] [--batch-size 32] [--threads N]

Loads the model in float32 and in bfloat16 (one at a time), scores the first `--n` prompts of each set (the
refusal score at the first response position, last position unembedded, as extraction's filter and the sweep do)
and prints per set: the largest and mean per-prompt difference, the difference of the set means (what a sweep
score is), how many prompts change sign (what the paper's filter reads), and seconds per forward pass for each dtype.
The last line: `bf16 refusal-score tolerance: max |Δ| <a> per prompt, <b> on set means; speed-up <c>×`.
A sweep's decisions compare set means against margins of ≥ 1 logit (`stop_margin`) and KL against 0.1–0.2, so a
difference of the set means well under 0.1 logit leaves them unchanged; the benchmark prints the figures, the
config chooses.
"""

import argparse
import gc
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from workbench.data import load_prompts  # noqa: E402
from workbench.eval.scoring import last_position_logits  # noqa: E402
from workbench.method.refusal_math import refusal_score  # noqa: E402
from workbench.models.loader import LoadOptions, load_model  # noqa: E402


def scores(model: str, dtype: str, sets: list[str], n: int, batch_size: int) -> dict[str, tuple[torch.Tensor, float]]:
    lm = load_model(model, LoadOptions(dtype=dtype))
    out = {}
    for name in sets:
        prompts = [p.instruction for p in load_prompts(name, limit=n)]
        last_position_logits(lm, prompts[:2], batch_size)  # warm-up
        started = time.perf_counter()
        logits = last_position_logits(lm, prompts, batch_size)
        seconds = (time.perf_counter() - started) / -(-len(prompts) // batch_size)
        out[name] = (refusal_score(logits, lm.info.refusal_tokens), seconds)
        print(f"  {dtype:<9} {name:<24} {seconds:6.2f} s per forward of ≤ {batch_size} prompts", flush=True)
    del lm
    gc.collect()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--sets", nargs="+", default=["harmful_train", "harmless_train", "or_bench_hard_train"])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.model}: {args.n} prompts per set, {torch.get_num_threads()} threads")
    full = scores(args.model, "float32", args.sets, args.n, args.batch_size)
    half = scores(args.model, "bfloat16", args.sets, args.n, args.batch_size)
    worst_prompt = worst_mean = 0.0
    ratios = []
    for name in args.sets:
        (a, ta), (b, tb) = full[name], half[name]
        diff = (b - a).abs()
        mean_diff = abs(b.mean().item() - a.mean().item())
        flips = int(((a > 0) != (b > 0)).sum())
        worst_prompt, worst_mean = max(worst_prompt, diff.max().item()), max(worst_mean, mean_diff)
        ratios.append(ta / tb)
        print(f"{name:<24} mean score fp32 {a.mean().item():+.3f} bf16 {b.mean().item():+.3f} | per prompt max |Δ| "
              f"{diff.max().item():.3f} mean |Δ| {diff.mean().item():.3f} | set mean |Δ| {mean_diff:.3f} | sign "
              f"changes {flips}/{len(a)} | fp32/bf16 time {ta / tb:.2f}×")
    print(f"bf16 refusal-score tolerance: max |Δ| {worst_prompt:.3f} per prompt, {worst_mean:.3f} on set means; "
          f"speed-up {min(ratios):.2f}×")


if __name__ == "__main__":
    main()
