"""The `workbench` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys

from workbench.errors import WorkbenchError


def _add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--model", default=default, required=default is None,
                   help="registered name, local HF directory, .gguf file or hub id (owner/name)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device-map", default=None, help="accelerate device map for several GPUs, e.g. auto")
    p.add_argument("--system-prompt", default=None, help="system turn (default: the template's own)")


def _load(args):
    from workbench.models import LoadOptions, load_model

    return load_model(args.model, LoadOptions(device=args.device, dtype=args.dtype, device_map=args.device_map,
                                              system_prompt=args.system_prompt))


def cmd_models(args) -> None:
    from workbench.models import BUILTIN_MODELS

    print("Registered models (offline):")
    for name, model in BUILTIN_MODELS.items():
        print(f"  {name:28s} {model.description}")
    print("Also accepted: a local Hugging Face checkpoint directory, a .gguf file, or a hub id (owner/name, online).")


def cmd_datasets(args) -> None:
    import pandas as pd

    from workbench.data import REGISTRY, is_available

    table = pd.DataFrame(
        [{"name": s.name, "kind": s.kind, "rows": s.size, "source": s.source, "local": is_available(s)}
         for s in REGISTRY.values()]
    )
    print(table.to_string(index=False))


def cmd_chat(args) -> None:
    from workbench.data import load_prompts
    from workbench.generation import greedy_generate
    from workbench.judge import SubstringJudge

    if (args.prompt is None) == (args.prompts_file is None):
        raise WorkbenchError("give either a prompt or --prompts-file FILE.jsonl")
    lm = _load(args)
    if args.prompt is not None:
        print(greedy_generate(lm, [args.prompt], args.max_new_tokens, progress=False)[0])
        return
    prompts = load_prompts(args.prompts_file)
    instructions = [p.instruction for p in prompts]
    responses = greedy_generate(lm, instructions, args.max_new_tokens, batch_size=args.batch_size)
    judge = SubstringJudge()
    for instruction, response in zip(instructions, responses, strict=True):
        print(json.dumps({"instruction": instruction, "response": response, "refused": judge.is_refusal(response)},
                         ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Refusal-direction research workbench")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the registered models").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets and whether they are available locally"
                   ).set_defaults(func=cmd_datasets)

    p = sub.add_parser("chat", help="greedy answers from the hooked model")
    _add_model_args(p)
    p.add_argument("prompt", nargs="?", help="one instruction")
    p.add_argument("--prompts-file", help="JSONL with an `instruction` per line (or a registered dataset name)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
