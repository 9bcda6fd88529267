"""Sweep speed: the paper-style reference loop vs the workbench's fast sweep and its exact mode (every candidate
fully scored, batched), same model, prompts and candidates.

    PYTHONPATH=. python benchmarks/sweep.py [--layers 2 4 ... 22] [--lams 1.0 0.6] [--n-val 32] [--exact-only]

Prints the wall times, the ratios, the exact mode's speed-up over the reference loop and its largest score
difference from it, whether the sweeps select the same (position, layer) at each λ, the cost of adding a λ to a
finished sweep (re-selection from cached grids), and ends with
`sweep speedup: <ratio>x, same winner: <yes|no>` (with `--exact-only`, which skips the fast sweep:
`exact speedup: <ratio>x, max score difference: <d>`).
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.method.rule import SelectionRule  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.stages.extract import ExtractConfig, extract, load_candidates  # noqa: E402
from workbench.stages.run_dir import RunDir  # noqa: E402
from workbench.stages.sweep import SweepConfig, candidate_scorer, load_validation  # noqa: E402
from workbench.stages.sweep_algorithms import exact_sweep, fast_sweep, reference_sweep, to_frame  # noqa: E402

SCORES = ["ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl",
          "steering_refusal_score", "steering_kl"]


def winners(frame, lams, rule: SelectionRule, n_layers: int):
    applied = rule.apply(frame, n_layers)
    out = {}
    for lam in lams:
        choice = rule.pick(applied, "w'", lam)
        out[lam] = None if choice is None else (int(choice["pos"]), int(choice["layer"]))
    return out


def max_score_difference(frame, reference) -> float:
    """The largest absolute difference of any score of any fully scored candidate between two sweeps (inf if they did
    not fully score the same candidates)."""
    a, b = (f[f.stage == "full"].fillna({"lam": -1.0}).set_index(["vector", "lam", "pos", "layer"]).sort_index()
            for f in (frame, reference))
    if list(a.index) != list(b.index):
        return float("inf")
    return float((a[SCORES] - b[SCORES]).abs().max().max())


def forward_work(scorer, val, layers: list[int], n_layers: int) -> dict[str, float]:
    """Per candidate, the linear-layer work of the reference loop (paper-style: full prompts in the reference's batches,
    every position unembedded) and of the exact mode (`CandidateScorer.pieces`, the template prefix once per piece,
    the last position unembedded), and a floor for any exact scorer: no padding, the prefix once per candidate,
    steering passes run only from the candidate's layer. In token-passes through the blocks, the unembedding counted
    as its share of a token's matrix work; attention's own products and element-wise work are left out (on this model
    most of the time is in the linear layers). The speed-up of an exact scorer is bounded near reference / its work."""
    lm = scorer.lm
    blocks = sum(p.numel() for name, p in lm.model.named_parameters() if p.dim() == 2 and ".layers." in name)
    unembed = lm.info.vocab_size * lm.info.d_model / blocks  # one position's unembedding, in token-passes
    n_prefix = len(lm.chat.prefix_token_ids)
    length = {p: len(lm.tokenizer.encode(lm.chat.format(p), add_special_tokens=False))
              for p in val.pseudo_harmful + val.harmful + val.harmless}

    def batched(prompts: list[str]) -> int:  # full prompts in consecutive batches, each padded to its longest
        return sum(max(length[p] for p in prompts[i : i + scorer.batch_size]) * len(prompts[i : i + scorer.batch_size])
                   for i in range(0, len(prompts), scorer.batch_size))

    def pieced(prompts: list[str]) -> int:  # the exact mode's pieces, the prefix once per piece
        return sum((max(length[prompts[i]] for i in piece) - n_prefix) * len(piece) + n_prefix
                   for piece in scorer.pieces(prompts))

    everything = val.pseudo_harmful + val.harmful + val.harmless
    rows = len(everything) + len(val.harmless)
    reference_tokens = (batched(val.pseudo_harmful + val.harmless) + batched(val.harmful)
                        + batched(val.harmless))
    exact_tokens = pieced(everything) + pieced(val.harmless)
    after_prefix = sum(length[p] - n_prefix for p in everything)
    steering_share = sum(1 - layer / n_layers for layer in layers) / len(layers)
    floor_tokens = (after_prefix + n_prefix
                    + steering_share * (sum(length[p] - n_prefix for p in val.harmless) + n_prefix))
    return {"reference": reference_tokens * (1 + unembed), "exact": exact_tokens + rows * unembed,
            "floor": floor_tokens + rows * unembed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-safety")
    parser.add_argument("--layers", type=int, nargs="+", default=list(range(1, 24)))
    parser.add_argument("--positions", type=int, nargs="+", default=None)
    parser.add_argument("--lams", type=float, nargs="+", default=[1.0])
    parser.add_argument("--extra-lam", type=float, default=0.5, help="λ added afterwards (re-selection cost)")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-val", type=int, default=32)
    parser.add_argument("--max-kl", type=float, default=0.2, help="the selection rule's KL bound (the sweep screens "
                        "for it, both sweeps are selected with it)")
    parser.add_argument("--reference-share-prefix", action="store_true",
                        help="let the reference loop reuse the template prefix's KV cache too (the paper's does not)")
    parser.add_argument("--reference-last-logits", action="store_true",
                        help="let the reference loop unembed only the last position too (the paper's unembeds all)")
    parser.add_argument("--exact-only", action="store_true", help="time the exact mode against the reference loop "
                        "only (no fast sweep, no added λ)")
    args = parser.parse_args()

    lm = load_model(args.model)
    run = RunDir(tempfile.mkdtemp(prefix="bench-sweep-"))
    extract(lm, ExtractConfig(n_train=args.n_train), run)
    grids = load_candidates(run)
    rule = SelectionRule(max_ablation_kl=args.max_kl)
    config = SweepConfig(lams=tuple(args.lams), n_val=args.n_val, layers=tuple(args.layers),
                         positions=tuple(args.positions) if args.positions else None)

    scorer = candidate_scorer(lm, config)
    if not args.exact_only:
        start = time.perf_counter()
        val = load_validation(lm, config)
        fast = to_frame(fast_sweep(scorer, grids, val, config, rule))
        fast_seconds = time.perf_counter() - start

    start = time.perf_counter()
    val_ref = load_validation(lm, config)
    paper = candidate_scorer(lm, replace(config, share_prefix=args.reference_share_prefix,
                                         last_logits_only=args.reference_last_logits))
    reference = to_frame(reference_sweep(paper, grids, val_ref, config, rule))
    reference_seconds = time.perf_counter() - start

    start = time.perf_counter()
    val_exact = load_validation(lm, config)
    exact = to_frame(exact_sweep(scorer, grids, val_exact, replace(config, mode="exact"), rule))
    exact_seconds = time.perf_counter() - start

    reference_winners = winners(reference, args.lams, rule, grids.n_layers)
    exact_winners = winners(exact, args.lams, rule, grids.n_layers)
    difference = max_score_difference(exact, reference)
    n_candidates = int((reference.stage == "full").sum())
    print(f"model {args.model}; {n_candidates} candidates ({len(args.lams)} λ + true); n_val {args.n_val}")
    print(f"reference loop: {reference_seconds:.1f} s ({reference_seconds / n_candidates:.2f} s per candidate)")
    print(f"exact sweep:    {exact_seconds:.1f} s ({int((exact.stage == 'full').sum())} fully scored, "
          f"{reference_seconds / exact_seconds:.1f}x faster than the reference loop; scores "
          f"{'match' if difference <= 1e-4 else 'differ from'} the reference: max abs diff {difference:.1e})")
    if not (args.reference_share_prefix or args.reference_last_logits):
        work = forward_work(scorer, val_exact, args.layers, grids.n_layers)
        print(f"forward work per candidate (token-passes): reference {work['reference']:.0f}, exact "
              f"{work['exact']:.0f} (bound {work['reference'] / work['exact']:.1f}x); no padding, prefix once, "
              f"steering from the candidate's layer: {work['floor']:.0f} "
              f"(bound {work['reference'] / work['floor']:.1f}x)")
    if args.exact_only:
        for name, frame in (("exact", exact), ("reference", reference)):  # kept: the comparison is re-derivable
            frame.to_csv(run.file(f"sweep_{name}.csv"), index=False)
        for lam in args.lams:
            print(f"λ={lam}: reference winner (pos, layer) {reference_winners[lam]}, exact winner {exact_winners[lam]}")
        print(f"the sweeps' rows: {run.file('sweep_exact.csv')}, {run.file('sweep_reference.csv')}")
        print(f"exact speedup: {reference_seconds / exact_seconds:.1f}x, max score difference: {difference:.1e}")
        return

    start = time.perf_counter()
    val_extra = load_validation(lm, config)
    fast_sweep(scorer, grids, val_extra, replace(config, lams=(args.extra_lam,)), rule, include_r=False)
    extra_seconds = time.perf_counter() - start

    fast_winners = winners(fast, args.lams, rule, grids.n_layers)
    for name, frame in (("fast", fast), ("exact", exact), ("reference", reference)):  # kept: winners re-derivable
        frame.to_csv(run.file(f"sweep_{name}.csv"), index=False)
    print(f"fast sweep:     {fast_seconds:.1f} s ({int((fast.stage == 'full').sum())} fully scored)")
    print(f"adding λ={args.extra_lam} to the finished sweep: {extra_seconds:.1f} s "
          f"({100 * extra_seconds / reference_seconds:.1f}% of the reference sweep, "
          f"{100 * extra_seconds / fast_seconds:.0f}% of the fast one)")
    same = all(fast_winners[lam] == reference_winners[lam] for lam in args.lams)
    for lam in args.lams:
        print(f"λ={lam}: reference winner (pos, layer) {reference_winners[lam]}, fast winner {fast_winners[lam]}, "
              f"exact winner {exact_winners[lam]}")
    print(f"the sweeps' rows: {run.file('sweep_fast.csv')}, {run.file('sweep_exact.csv')}, "
          f"{run.file('sweep_reference.csv')}")
    print(f"sweep speedup: {reference_seconds / fast_seconds:.1f}x, same winner: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
