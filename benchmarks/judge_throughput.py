"""Throughput of the model judge on completions like the workbench's own (cut to 64 tokens).

    python benchmarks/judge_throughput.py [--model qwen2.5-coder-1.5b-instruct] [--dtype bfloat16]
                                          [--n 96] [--batch-size 8] [--threads N] [--labels FILE.csv]

Completions are the first `--n` rows of a labelled XSTest file (`--labels`, default the Llama-2 file under
WORKBENCH_DATA_DIR), each read up to 64 tokens as the judge reads the workbench's completions; the judge decides
with its committed read-out (one forward pass per completion, the rubric prefix cached once). One untimed warm-up
batch, then the whole set timed once. Prints completions per minute and the keyword and substring judges' rate on
the same rows for scale. Ends with `model judge throughput: <N> completions/min`.
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from workbench.eval.calibration import read_labelled  # noqa: E402
from workbench.eval.judge import JudgeOptions, SubstringJudge  # noqa: E402
from workbench.eval.keywords import KeywordJudge  # noqa: E402
from workbench.eval.model_judge import load_model_judge  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=JudgeOptions.model)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--labels", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(os.environ.get("WORKBENCH_DATA_DIR", "../shared/datasets"))
    labels = args.labels or data_dir / "xstest/labelled_completions/xstest_v2_completions_llama2orig.csv"
    rows = read_labelled(labels)
    prompts, completions = list(rows.prompts[: args.n]), list(rows.completions[: args.n])
    judge = load_model_judge(JudgeOptions(model=args.model, dtype=args.dtype, batch_size=args.batch_size))
    print(f"judge {args.model} ({args.dtype}), read-out: {judge.readout.layer if judge.readout else 'none'}, "
          f"{torch.get_num_threads()} threads, {len(prompts)} completions cut to {judge.max_completion_tokens} tokens, "
          f"batch {args.batch_size}")
    judge.verdicts(prompts[: args.batch_size], completions[: args.batch_size])  # warm-up (and the prefix cache)
    start = time.perf_counter()
    judge.verdicts(prompts, completions)
    seconds = time.perf_counter() - start
    for other in (KeywordJudge.committed(), SubstringJudge()):
        t = time.perf_counter()
        other.verdicts(prompts, completions)
        print(f"  {other.name:9s} judge: {len(prompts) / max(time.perf_counter() - t, 1e-9) * 60:,.0f} completions/min")
    print(f"model judge throughput: {len(prompts) / seconds * 60:.0f} completions/min ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
