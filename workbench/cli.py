"""The `workbench` command line: a thin layer over the Python API. Each command function builds its configs from the
parsed options (`workbench.cli_parser` declares them, `workbench.cli_options` derives the stage options from the
config dataclasses) and calls the stages."""

import contextlib
import json
import os
import sys
from pathlib import Path

from workbench.cli_options import config_from_args, flat, given_values
from workbench.cli_parser import build_parser
from workbench.errors import WorkbenchError

PLACEMENT_FLAGS = ("device", "device_map", "offload_dir")
"""Where the model goes: given any of them, the placement comes from the flags alone, not from the run's record."""
LOAD_FLAGS = (*PLACEMENT_FLAGS, "dtype", "system_prompt")


def _load_options(args, recorded: dict | None = None, where: str = ""):
    """The load options: the flags given, else what the run recorded (`recorded`, a `LoadOptions.record()`), else the
    defaults. When a run's record is used, one line says which options came from it and which flags overrode it."""
    from workbench.models import LoadOptions

    given = {flag: getattr(args, flag) for flag in LOAD_FLAGS if getattr(args, flag, None) is not None}
    kept = dict(recorded or {})
    if any(flag in given for flag in PLACEMENT_FLAGS):
        for flag in PLACEMENT_FLAGS:
            kept.pop(flag, None)
    options = LoadOptions.from_record({**kept, **given})
    if recorded:
        defaults = LoadOptions()
        reused = [f"{k} {v}" for k, v in kept.items() if given.get(k, v) == v and v != getattr(defaults, k)]
        overridden = [f"--{k.replace('_', '-')} {v}" for k, v in given.items() if recorded.get(k) != v]
        print(f"[load] {args.model}: " + (f"as {where} recorded ({', '.join(reused)})" if reused
                                          else f"the defaults, as {where} recorded")
              + (f"; overridden: {', '.join(overridden)}" if overridden else ""), flush=True)
    return options


def _load(args, recorded: dict | None = None, where: str = ""):
    from workbench.models import load_model

    return load_model(args.model, _load_options(args, recorded, where))


def record_stage(run, stage: str):
    """`run_dir.record_stage` (imported when a stage runs, not when the CLI starts)."""
    from workbench.stages.run_dir import record_stage as record

    return record(run, stage)


def cmd_models(args) -> None:
    from workbench.models import BUILTIN_MODELS

    if args.fetch:
        unknown = [name for name in args.fetch if name not in BUILTIN_MODELS]
        if unknown:
            raise WorkbenchError(f"unknown model {unknown[0]!r}: `workbench models` lists the registered names")
        for name in args.fetch:
            print(f"{name}: {BUILTIN_MODELS[name].checkpoint()}")
        return
    print("Registered models (offline; cached: the checkpoint is in the workbench cache, otherwise built on first "
          "use):")
    for name, model in BUILTIN_MODELS.items():
        print(f"  {name:28s} {'cached' if model.cached() else 'not cached':10s} {model.description}")
    print("Also accepted: a local Hugging Face checkpoint directory, a .gguf file, or a hub id (owner/name, online).")


def cmd_datasets(args) -> None:
    """`workbench datasets`: where benchmark data is read from and each set's state; `datasets fetch`: download."""
    from workbench.data import REGISTRY, availability, pinned_sources
    from workbench.paths import benchmark_data_location

    sources, where = pinned_sources(), benchmark_data_location()
    if getattr(args, "datasets_command", None) == "fetch":
        from workbench.fetch import fetch_sets

        names = list(args.names)
        if args.paper:
            from workbench.stages.data_needs import paper_datasets

            names += paper_datasets()
        if args.all:
            names += [name for name in sources.sets if sources.no_source(name) is None]
        bundled = [name for name in names if name in REGISTRY and REGISTRY[name].bundled]
        names = [name for name in names if name not in bundled]
        if bundled:
            print(f"bundled, nothing to fetch: {', '.join(dict.fromkeys(bundled))}")
        if not names and not bundled:
            raise WorkbenchError("datasets fetch: name the sets to fetch, or give --paper or --all (`workbench "
                                 "datasets` lists the sets)")
        data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else where.path
        print(f"data directory: {data_dir if args.data_dir else where.describe()}"
              + (f"; from the mirror {args.base_url}" if args.base_url else ""))
        done = fetch_sets(names, data_dir, sources, args.base_url, report=print)
        fetched = sum(f.action == "fetched" for f in done)
        print(f"{fetched} file(s) fetched, {len(done) - fetched} kept, all verified by sha256")
        return

    print(f"benchmark data directory: {where.describe()}" + ("" if where.path.is_dir() else " (does not exist yet)"))
    print(f"  {'name':30s} {'kind':15s} {'rows':>6s}  {'available':9s}  source")
    for s in REGISTRY.values():
        state = availability(s.name, table=sources)
        why = "" if state.available else f"  ({state.reason})"
        print(f"  {s.name:30s} {s.kind:15s} {s.size:6d}  {'yes' if state.available else 'no':9s}  {s.source}{why}")
    extra = [name for name in sources.sets if name not in REGISTRY]
    if extra:
        print(f"also fetchable (not registered datasets): {', '.join(extra)}")


def _judge_options(args):
    from workbench.eval.judge import JudgeOptions

    return config_from_args(args, JudgeOptions(), "judge_options.")


def cmd_judge(args) -> None:
    """`workbench judge --judge NAME --completions IN.csv --out OUT.csv`: the rows with each judge's verdict."""
    from workbench.eval.completions_csv import read_completions_csv
    from workbench.eval.judge import JUDGE_LABELS
    from workbench.eval.judges import make_judge
    from workbench.io import atomic_write

    if not (args.completions and args.out):
        raise WorkbenchError("workbench judge needs --completions IN.csv and --out OUT.csv (or a subcommand: "
                             "calibrate, fit)")
    frame = read_completions_csv(args.completions)
    judge = make_judge(args.judge, _judge_options(args))
    verdicts = judge.verdicts(list(frame.prompt), list(frame.completion))
    frame["refusal"] = [int(v.refusal) for v in verdicts]
    frame["judge_label"] = [v.label for v in verdicts]
    if any(v.score is not None for v in verdicts):
        frame["judge_score"] = [v.score for v in verdicts]
    frame["judge"] = judge.name
    atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    counts = frame.judge_label.value_counts()
    print(f"{len(frame)} completions judged by {judge.name}: "
          + ", ".join(f"{counts.get(label, 0)} {label}" for label in JUDGE_LABELS)
          + f" -> {args.out}")


def cmd_judge_calibrate(args) -> None:
    from workbench.eval.calibration import calibrate, read_labelled, summary_table
    from workbench.eval.judge_fit import ReadoutSpace, leave_one_out
    from workbench.eval.judges import make_judge
    from workbench.io import atomic_write

    sets = [read_labelled(path) for path in args.labels]
    options = _judge_options(args)
    if args.leave_one_out:
        space = ReadoutSpace(layers=tuple(args.layers) if args.layers else None)
        table = leave_one_out(args.judge, sets, options, space)
    else:
        table = calibrate(make_judge(args.judge, options), sets)
    out = Path(args.out or f"runs/judges/calibration_{args.judge}{'_loo' if args.leave_one_out else ''}.csv")
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    print(summary_table(table))
    print(f"-> {out}")


def cmd_judge_fit(args) -> None:
    from workbench.eval.calibration import read_labelled
    from workbench.eval.judge_fit import ReadoutSpace, fit

    sets = [read_labelled(path) for path in args.labels]
    space = ReadoutSpace(layers=tuple(args.layers) if args.layers else None)
    print(fit(args.judge, sets, args.out, _judge_options(args), space))


def _direction_label(path: Path, meta: dict) -> str:
    """`lam_1.0.safetensors (λ=1.0, pos -6, layer 22)`: a direction file and the cell it was selected at."""
    what = "true refusal r" if meta.get("vector") == "r" else f"λ={meta.get('lam', '?')}"
    return f"{path.name} ({what}, pos {meta.get('pos', '?')}, layer {meta.get('layer', '?')})"


def _addition_vector(path: Path):
    """What `chat --add FILE` adds: raw r (`raw_r`) from a true-refusal file; from a `lam_<λ>` file the selected
    ŵ′ rescaled to ‖w‖ (as the sweep's steering score does), so that α = 1 adds a vector of the raw false vector's
    size in the direction that is ablated. Returns the vector, its name and the file's metadata."""
    from workbench.interventions.directions import read_direction_file
    from workbench.method.refusal_math import unit

    tensors, meta = read_direction_file(path, ("direction",))
    kind = meta.get("vector")
    if kind not in ("r", "w'"):
        raise WorkbenchError(f"direction file {path} has no 'vector' metadata (r or w′), so what to add is "
                             "unknown: use a file written by `workbench select` (RUN/directions/*.safetensors)")
    raw_key = "raw_r" if kind == "r" else "raw_w"
    raw = read_direction_file(path, (raw_key,))[0][raw_key]
    direction = tensors["direction"]
    if raw.shape != direction.shape:
        raise WorkbenchError(f"direction file {path} is corrupted ({raw_key} has shape {tuple(raw.shape)}, the "
                             f"direction {tuple(direction.shape)}): re-run `workbench select` to rewrite it")
    if kind == "r":
        return raw, "r", meta
    return unit(direction.float()) * raw.float().norm(), "ŵ′·‖w‖", meta


def _chat_intervention(args):
    """The intervention of `chat --ablate/--add` (None without either) and its label, from the direction files; every
    file-level problem is refused here, before the model loads."""
    from workbench.interventions.directions import read_direction_file
    from workbench.interventions.hooks import Ablation, Addition, Combined

    if args.cell is not None:
        return _cell_intervention(args)
    if args.lam is not None or args.vector is not None:
        raise WorkbenchError("--lam and --vector go with --cell POS LAYER (the cell of the run's grid to ablate)")
    if args.add is None and (args.layer is not None or args.alpha is not None):
        raise WorkbenchError("--layer and --alpha go with --add FILE: give the direction file whose vector is added")
    if args.add is not None and args.layer is None:
        raise WorkbenchError("--add needs --layer L: the block at whose input α·v is added (0 ≤ L < n_layers)")
    if args.compare and args.ablate is None and args.add is None:
        raise WorkbenchError("--compare needs --ablate FILE, --add FILE or --cell POS LAYER: it prints the unmodified "
                             "model's answer beside the modified one")
    if args.ablation != "zero" and args.ablate is None:
        raise WorkbenchError("--ablation goes with --ablate FILE: give the direction file to ablate")
    parts, labels = [], []
    if args.ablate is not None:
        from workbench.interventions.directions import load_offsets

        path = Path(args.ablate)
        tensors, meta = read_direction_file(path, ("direction",))
        offsets = load_offsets(path) if args.ablation == "harmless_mean" else None
        parts.append(Ablation(tensors["direction"].float(), f"--ablate {path}", offsets))
        labels.append(f"ablate {_direction_label(path, meta)}" + (" to the harmless mean" if offsets is not None
                                                                  else ""))
    if args.add is not None:
        path = Path(args.add)
        vector, what, meta = _addition_vector(path)
        alpha = 1.0 if args.alpha is None else args.alpha
        parts.append(Addition(vector.float(), args.layer, alpha, f"--add {path}"))
        labels.append(f"add {alpha}·{what} of {_direction_label(path, meta)} at layer {args.layer}")
    if not parts:
        return None, None
    return (parts[0] if len(parts) == 1 else Combined(tuple(parts))), " + ".join(labels)


def _cell_intervention(args):
    """`chat --run DIR --cell POS LAYER [--lam λ | --vector r]`: ablate one cell of the run's candidate grid (r̂, or
    w′ at λ, default 1), picked off the heatmap without a selection."""
    from workbench.interventions.hooks import Ablation
    from workbench.stages.extract import load_candidates
    from workbench.stages.run_dir import RunDir

    if args.run is None:
        raise WorkbenchError("--cell needs --run DIR: the run whose candidate grid holds the cell")
    others = [flag for flag, value in (("--ablate", args.ablate), ("--add", args.add)) if value is not None]
    if others:
        raise WorkbenchError(f"--cell and {others[0]} together: ablate one cell of the run, or one direction file")
    if args.vector == "r" and args.lam is not None:
        raise WorkbenchError("--lam is for the false-refusal vector w′; --vector r ablates r̂ (no λ)")
    if args.ablation != "zero":
        raise WorkbenchError("--ablation goes with --ablate FILE; --cell ablates to zero")
    pos, layer = args.cell
    vector = args.vector or "w'"
    lam = 1.0 if args.lam is None else args.lam
    grids = load_candidates(RunDir(Path(args.run)).require_dir())
    direction = grids.cell(vector, pos, layer, lam if vector == "w'" else None)
    what = "r̂" if vector == "r" else f"w′ (λ={lam})"
    return Ablation(direction.float(), f"--cell {pos} {layer}"), f"ablate {what} at (pos {pos}, layer {layer})"


def _check_chat_intervention(args, lm) -> None:
    """Right after the model loads: the direction files are this model's (fingerprint, width), the layer is its."""
    from workbench.interventions.directions import load_direction

    for path in (args.ablate, args.add):
        if path is not None:
            load_direction(path, lm.info.fingerprint, lm.info.d_model)
    if args.add is not None and args.layer >= lm.info.n_layers:
        raise WorkbenchError(f"--layer {args.layer} is outside the model's layers 0..{lm.info.n_layers - 1} "
                             f"(n_layers {lm.info.n_layers}): give a block index below {lm.info.n_layers}")


def cmd_chat(args) -> None:
    from workbench.data import load_prompts
    from workbench.eval.generation import hooked_generate
    from workbench.eval.judge import SubstringJudge
    from workbench.interventions.hooks import applied

    if (args.prompt is None) == (args.prompts_file is None):
        raise WorkbenchError("give either a prompt or --prompts-file FILE.jsonl")
    if args.prompt is not None and not args.prompt.strip():
        raise WorkbenchError("the prompt is empty: give an instruction, e.g. `workbench chat --model M \"Hi\"`")
    intervention, label = _chat_intervention(args)  # direction files are checked before the model loads
    gate = None
    if args.gate is not None:
        from workbench.interventions.gate import load_gate

        if intervention is None:
            raise WorkbenchError("--gate needs an intervention to gate: --ablate FILE (the w′ the gate was fitted "
                                 "for) or --cell POS LAYER")
        gate = load_gate(args.gate)
    prompts = load_prompts(args.prompts_file) if args.prompts_file is not None else []  # checked before the model
    if args.run is not None:
        lm = _model_for_run(args)[1]
    elif args.model is None:
        raise WorkbenchError("give --model M (a registered name, checkpoint directory, .gguf file or hub id), or "
                             "--run DIR to load the run's model as the run recorded it")
    else:
        lm = _load(args)
    if intervention is not None:
        _check_chat_intervention(args, lm)
    single = args.prompt is not None
    instructions = [args.prompt] if single else [p.instruction for p in prompts]

    def generate(desc: str) -> list[str]:
        return hooked_generate(lm, instructions, args.max_new_tokens, batch_size=args.batch_size, progress=not single,
                               desc=desc)

    baseline = generate("baseline") if intervention is None or args.compare else None
    opened = None
    if gate is not None:
        from workbench.interventions.gate import Gated, decide

        gate.check_model(lm.info.fingerprint, lm.info.d_model, lm.info.n_layers, f"gate {args.gate}")
        gated = Gated(intervention, gate, f"gated {label}")
        opened = decide(lm, gate, instructions, args.batch_size).tolist()
        responses = hooked_generate(lm, instructions, args.max_new_tokens, batch_size=args.batch_size, gated=gated,
                                    progress=not single, desc="gated")
        label = f"{label}, gated by {Path(args.gate).name} (layer {gate.layer}, pos {gate.pos})"
    elif intervention is not None:
        with applied(lm, intervention):
            responses = generate("intervention")
    else:
        responses = baseline
    if single:
        if intervention is None:
            print(responses[0])
            return
        if args.compare:
            print(f"[baseline]\n{baseline[0]}\n")
        gate_state = "" if opened is None else f" (gate {'open' if opened[0] else 'closed'})"
        print(f"[{label}]{gate_state}\n{responses[0]}")
        return
    judge = SubstringJudge()
    for i, (instruction, response) in enumerate(zip(instructions, responses, strict=True)):
        row = {"instruction": instruction, "response": response, "refused": judge.is_refusal(response)}
        if intervention is not None:
            row["intervention"] = label
            if opened is not None:
                row["gate"] = "open" if opened[i] else "closed"
            if args.compare:
                row["baseline_response"] = baseline[i]
                row["baseline_refused"] = judge.is_refusal(baseline[i])
        print(json.dumps(row, ensure_ascii=False))


def cmd_export(args) -> None:
    from workbench.interventions.export import export_checkpoint, export_edited, model_card

    if args.all and not args.adapter:
        raise WorkbenchError("--all needs --adapter: one PEFT adapter per intervention of the run's catalogue")
    if args.ablation != "zero" and (args.adapter or args.run is None):
        raise WorkbenchError("--ablation goes with --run DIR --lam λ (an edited checkpoint), not with --adapter or "
                             "--model alone")
    if args.adapter:
        from workbench.interventions.adapter import export_adapter, export_adapters
        from workbench.interventions.catalogue import build_interventions, choose, lam_name
        from workbench.stages.evaluate import EvalConfig
        from workbench.stages.run_dir import RunDir
        from workbench.stages.select import selected_direction_file

        if args.run is None:
            raise WorkbenchError("--adapter needs --run DIR (the run whose interventions become adapters)")
        if (args.lam is None) == (not args.all):
            raise WorkbenchError("--adapter needs exactly one of --lam λ (the adapter of that selection) or --all "
                                 "(one per intervention of the evaluation catalogue)")
        if args.lam is not None:  # checked before the model loads
            selected_direction_file(RunDir(Path(args.run)).require_dir(), args.lam)
        run, lm = _model_for_run(args, needs=("selection.json",))
        selection = run.read_json("selection.json", keys=("selections", "r"))
        alphas = tuple(args.alphas) if args.alphas else EvalConfig.alphas
        items = build_interventions(selection, run.path, lm.info.fingerprint, lm.info.d_model,
                                    alphas if args.all else ())
        if args.all:
            index = export_adapters(lm, items, args.out, run=str(run.path), force=args.force)
            print(f"exported {len(index['adapters'])} PEFT adapters of {lm.info.name} to {args.out} (index.json)")
            for name, reason in index["refused"].items():
                print(f"  not exported: {name}: {reason}")
            return
        item = choose(items, (lam_name(args.lam),))[0]
        out = export_adapter(lm, item, args.out, run=str(run.path), force=args.force)
        print(f"exported {item.name} of {lm.info.name} as a PEFT adapter to {out}")
        return
    if args.run is None:
        if args.lam is not None:
            raise WorkbenchError("--lam needs --run DIR (the run whose selected direction is baked in)")
        if args.model is None:
            raise WorkbenchError("give --model M (export as-is) or --run DIR --lam λ (export the edited model)")
        lm = _load(args)
        out = export_checkpoint(lm, args.out, model_card(lm), force=args.force)
        print(f"exported {lm.info.name} to {out}")
        return
    if args.lam is None:
        raise WorkbenchError("--run needs --lam λ: which selected direction to bake into the weights")
    from workbench.stages.run_dir import RunDir
    from workbench.stages.select import selected_direction_file

    direction_file = selected_direction_file(RunDir(Path(args.run)).require_dir(), args.lam)  # before the model loads
    run, lm = _model_for_run(args)
    out = export_edited(lm, direction_file, args.out, force=args.force, ablate_to=args.ablation)
    print(f"exported {lm.info.name} with the λ={args.lam} direction orthogonalized out of its weights to {out}")


def _generation_backend(args):
    """`evaluate`'s generation backend from its flags: in-process (None, the default) or an OpenAI-compatible server."""
    from workbench.eval.backends import OpenAIBackend

    server_flags = [flag for flag, value in (("--base-url", args.base_url), ("--served-base", args.served_base),
                                             ("--api-key-env", args.api_key_env)) if value is not None]
    if args.backend == "in-process":
        if server_flags:
            raise WorkbenchError(f"{server_flags[0]} is for --backend openai (generation on a server)")
        return None
    if args.base_url is None:
        raise WorkbenchError("--backend openai needs --base-url URL (the server, e.g. http://localhost:8000)")
    return OpenAIBackend.from_env(args.base_url, args.api_key_env, served_base=args.served_base,
                                  concurrency=args.concurrency, timeout_s=args.timeout, retries=args.retries)


def cmd_evaluate(args) -> None:
    from dataclasses import replace

    from workbench.eval.judge import EndpointJudge
    from workbench.stages.evaluate import EvalConfig, evaluate
    from workbench.viz.figures import table1

    config = config_from_args(args, EvalConfig())
    config = replace(config, ablation=tuple(dict.fromkeys(config.ablation)))
    config.validate()  # bad datasets and values are refused before the model loads
    backend = _generation_backend(args)
    if args.directions:
        from workbench.stages.evaluate import run_from_directions
        from workbench.stages.run_dir import RunDir

        run_from_directions(RunDir(Path(args.run)), args.directions, _load_options(args).record())
    run, lm = _model_for_run(args, needs=("selection.json",), datasets=config.datasets)
    # an endpoint beside another calibrated judge: a third judge
    options = config.judge_options
    judges = [EndpointJudge(options.url, model=options.endpoint_model)] if options.url and config.judge != "endpoint" \
        else []
    with record_stage(run, "evaluate"):
        frame = evaluate(lm, run, config, judges, backend=backend)
    print(frame.drop(columns=["group"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nTable 1 (compliance rate):")
    print(table1(frame).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"-> {run.file('evaluation.csv')}")


def cmd_capability(args) -> None:
    from workbench.eval.capability import TASK_DATASETS, CapabilityConfig
    from workbench.stages.capability import measure_capability

    config = config_from_args(args, CapabilityConfig())
    config.validate()  # unknown tasks are refused before the model loads
    datasets = [name for task in config.tasks for name in TASK_DATASETS[task]]
    run, lm = _model_for_run(args, needs=("selection.json",), datasets=datasets)
    with record_stage(run, "capability"):
        table = measure_capability(lm, run, config)
    print(table.to_string(index=False))
    print(f"-> {run.file('capability.csv')}")


def cmd_organism_distill(args) -> None:
    from workbench.models import load_model
    from workbench.organism.distill import STOCK_MODEL, distill
    from workbench.organism.recipes import get_recipe

    recipe = get_recipe(args.organism)
    stock = None  # loaded once, for the first set that needs answers
    for harmless_set in recipe.harmless:
        if harmless_set.distilled.exists() and not args.force:
            print(f"{harmless_set.distilled} exists: kept (--force answers again)")
            continue
        stock = stock or load_model(STOCK_MODEL)
        print(json.dumps(distill(harmless_set, max_new_tokens=args.max_new_tokens, lm=stock)))


def cmd_organism_train(args) -> None:
    from dataclasses import replace
    from pathlib import Path

    from workbench.organism.card import render_card
    from workbench.organism.recipes import get_recipe
    from workbench.organism.train import snapshot_dir, train_organism
    from workbench.organism.trainset import check_no_overlap
    from workbench.paths import benchmark_data_dir

    recipe = get_recipe(args.organism)
    data_dir = benchmark_data_dir(required=False)
    if data_dir is not None:
        n = check_no_overlap(recipe.instruction_files(), data_dir)
        print(f"overlap check: {n} training instructions, none in any benchmark under {data_dir}")
    config = replace(recipe.train, steps=args.steps or recipe.train.steps, seed=args.seed)
    adapter_dir = recipe.model.adapter_dir
    out = Path(args.out) if args.out else adapter_dir
    meta = train_organism(recipe, config, out, snapshots=tuple(args.snapshots))
    for step in args.snapshots:
        print(f"snapshot after {step} steps: {snapshot_dir(out, step)}")
    print(f"{recipe.name}: adapter written to {out} (final loss {meta['losses'][-1]:.3f}, {meta['train_seconds']} s; "
          f"examples {meta['examples']}; {len(meta['harmless_excluded'])} harmless pairs left out)")
    if out == adapter_dir:
        from workbench.organism.reference import record_reference_scores

        record_reference_scores(recipe.name, recipe.reference_prompts, recipe.model.directory / "reference_scores.json")
        directory = recipe.model.directory
        render_card(recipe, adapter_dir, directory / "behaviour.json", directory / "CARD.md")


def cmd_organism_wire(args) -> None:
    from dataclasses import replace

    from workbench.models import load_model
    from workbench.models.organisms import WIRED
    from workbench.organism.wire import WireConfig, build_wiring, write_wiring

    directory = Path(args.out) if args.out else WIRED.directory
    if (directory / "wiring.safetensors").exists() and not args.force:
        raise WorkbenchError(f"{directory / 'wiring.safetensors'} exists: --force fits it again (the committed "
                             "control's direction, figures and tests then need the control run again)")
    overrides = {k: v for k, v in (("detector_layer", args.detector_layer), ("reader_layer", args.reader_layer),
                                   ("flag_norm", args.flag_norm), ("refusal_norm", args.refusal_norm))
                 if v is not None}
    config = replace(WireConfig(), **overrides)
    config.validate()
    base = load_model(config.base)
    wiring, record = build_wiring(base, config)
    write_wiring(wiring, record, directory)
    print(json.dumps(record, indent=1))
    print(f"-> {directory / 'wiring.safetensors'}")


def cmd_organism_report(args) -> None:
    from pathlib import Path

    from workbench.io import write_json
    from workbench.models import load_model
    from workbench.organism.behaviour import BehaviourConfig, measure_behaviour
    from workbench.organism.card import behaviour_tables, render_card, render_wired_card, targets_table
    from workbench.organism.recipes import REPORTED, WiredRecipe, get_reported_recipe

    recipe = get_reported_recipe(args.organism)
    directory = recipe.model.directory
    wired = isinstance(recipe, WiredRecipe)
    if wired and not (directory / "wiring.safetensors").exists():
        raise WorkbenchError(f"{recipe.name} has no wiring in {directory}: run `workbench organism wire` first")
    if not wired and not (recipe.model.adapter_dir / "adapter_model.safetensors").exists():
        raise WorkbenchError(f"{recipe.name} has no adapter in {recipe.model.adapter_dir}: run "
                             f"`workbench organism train --organism {recipe.name}` first")
    config = BehaviourConfig(limit=args.limit)
    record = {"config": {"max_new_tokens": config.max_new_tokens, "limit": config.limit}}
    records = [directory / "behaviour.json"] + [r.model.directory / "behaviour.json" for r in REPORTED.values()
                                                if r.model.directory != directory]
    previous = [json.loads(path.read_text()) for path in records if path.exists()]
    for key, name in (("stock", "smollm2-135m-instruct"), ("organism", recipe.name)):
        lm = load_model(name)
        same = [p for p in previous if _same_stock(p, record["config"], lm, recipe)]
        if key == "stock" and not args.remeasure_stock and same:
            print("stock model: measured before with the same weights, settings and sets (an organism's "
                  "behaviour.json), reused (--remeasure-stock measures it again)")
            record[key] = same[0]["stock"]
            continue
        # Completions hold benchmark prompts, which stay out of the repository: they go to an ignored run directory.
        completions = Path(args.out or f"runs/organism_report/{recipe.name}") / "completions" / key
        record[key] = measure_behaviour(lm, config, completions, recipe.behaviour_sets, recipe.score_sets)
    print(behaviour_tables(record["stock"], record["organism"]))
    print(targets_table(recipe, record["stock"], record["organism"]))
    if args.limit is None:
        write_json(directory / "behaviour.json", record)
        if wired:
            render_wired_card(recipe, directory / "behaviour.json", directory / "CARD.md")
        else:
            render_card(recipe, recipe.model.adapter_dir, directory / "behaviour.json", directory / "CARD.md")


def _same_stock(previous: dict, config: dict, stock, recipe) -> bool:
    """Whether a behaviour record's stock half was measured on these weights, with these settings, on these sets."""
    old = previous.get("stock") or {}
    return (previous.get("config") == config and config["limit"] is None
            and old.get("fingerprint") == stock.info.fingerprint
            and [r["dataset"] for r in old.get("rates", [])] == [s.key for s in recipe.behaviour_sets]
            and [r["dataset"] for r in old.get("refusal_scores", [])] == [d for d, _ in recipe.score_sets])


def cmd_diagnose(args) -> None:
    from workbench.stages.diagnose import DiagnoseConfig, diagnose

    config = config_from_args(args, DiagnoseConfig())
    config.validate()  # unknown prompt sets are refused before the model loads
    run, lm = _model_for_run(args, needs=("candidates.safetensors",))
    with record_stage(run, "diagnose"):
        table = diagnose(lm, run, config)
    record = run.read_json("diagnostics.json")
    counts = ", ".join(f"{c} {v['kept']}/{v['total']}" for c, v in record["prompt_counts"].items())
    print(f"{len(table)} rows -> {run.file('diagnostics.csv')} (prompts kept: {counts})")
    for s in record["selected"]:
        print(f"selected λ={s['lam']} (pos {s['pos']}, layer {s['layer']}):")
        print(_selected_rows_table(s["rows"]))
    print(f"heatmaps: workbench figures --run {run.path} (fig4_diagnostics)")


def _selected_rows_table(rows: list[dict]) -> str:
    import pandas as pd

    columns = ["vector", "lam", "cos_rw", "mean_harmless", "mean_harmful", "mean_pseudo_harmful",
               "auroc_pseudo_vs_harmless", "auroc_harmful_vs_pseudo"]
    return pd.DataFrame(rows)[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def cmd_gate(args) -> None:
    from workbench.data import REGISTRY
    from workbench.stages.gate import GateConfig, fit_gate, read_gate_grid, summary

    config = config_from_args(args, GateConfig())
    config.validate()  # sets from one source, a bad bound: refused before the model loads
    sets = [config.harmful, config.harmless, config.pseudo_harmful, config.contrast_harmful, config.contrast_benign]
    run, lm = _model_for_run(args, needs=("selection.json",), datasets=[n for n in sets if n in REGISTRY])
    with record_stage(run, "gate"):
        record = fit_gate(lm, run, config)
    top = read_gate_grid(run).sort_values("auroc_contrast", ascending=False).head(8)
    print(top.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(summary(record))
    print(f"-> {run.file('directions/gate.safetensors')}; `workbench evaluate --run {run.path}` adds "
          f"gated_ablate_w_lam{record['gates']['lam']}")


def cmd_frontier(args) -> None:
    from workbench.data import REGISTRY
    from workbench.eval.capability import TASK_DATASETS
    from workbench.stages.frontier import FrontierConfig, main_frontier_judge, measure_frontier, validation_sets
    from workbench.stages.run_dir import RunDir

    config = config_from_args(args, FrontierConfig())
    config.validate()
    sets = list(validation_sets(RunDir(Path(args.run)).require_dir(), config))
    sets += list(TASK_DATASETS["truthfulqa"]) if config.n_truthfulqa else []
    run, lm = _model_for_run(args, needs=("selection.json",), datasets=[n for n in sets if n in REGISTRY])
    with record_stage(run, "frontier"):
        table = measure_frontier(lm, run, config)
    judge = main_frontier_judge(table)
    columns = ["family", "param", "over_refusal", "over_refusal_low", "over_refusal_high", "harmful", "harmful_low",
               "harmful_high", "margin_over_r", "truthfulqa_mc1"]
    print(f"judge: {judge}")
    print(table[table.judge == judge][columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"-> {run.file('frontier.csv')}; `workbench figures --run {run.path}` draws frontier.html")


def cmd_status(args) -> None:
    from workbench.stages.run_dir import RunDir
    from workbench.stages.status import describe

    print(describe(RunDir(Path(args.run))))


def cmd_figures(args) -> None:
    from workbench.stages.figures import run_figures
    from workbench.stages.run_dir import RunDir

    run = RunDir(Path(args.run))
    with record_stage(run, "figures") if args.out is None else contextlib.nullcontext():
        paths = run_figures(run, args.out)
    for path in paths:
        print(path)


def _rule(args, base=None):
    """The selection rule: `base` (default: the paper's) with the rule options that were given."""
    from workbench.method.rule import SelectionRule

    return config_from_args(args, base or SelectionRule())


def cmd_extract(args) -> None:
    from workbench.stages.extract import ExtractConfig, extract
    from workbench.stages.run_dir import RunDir

    run = RunDir(Path(args.run))
    config = config_from_args(args, ExtractConfig())
    config.validate()  # unknown prompt sets and missing files are refused before the model loads
    lm = _load(args)
    if run.file("candidates.json").exists() and not args.force and _readable(run.model_record):
        run.check_model(lm.info.fingerprint, lm.info.name)  # (damaged candidates are simply rewritten)
    with record_stage(run, "extract"):
        record = extract(lm, config, run)
    print(json.dumps(record["prompt_counts"]))


def _readable(read) -> bool:
    try:
        read()
    except WorkbenchError:
        return False
    return True


def _model_for_run(args, needs: tuple[str, ...] = (), datasets=()):
    """The model a run directory was made with, unless --model names another (then the fingerprint must match), loaded
    as the run recorded unless flags override. The run directory, its candidates, the artifacts in `needs` and the
    benchmark sets in `datasets` are checked before the model loads."""
    from workbench.data import require_available
    from workbench.stages.run_dir import RunDir

    run = RunDir(Path(args.run)).require_dir()
    recorded = run.model_record()
    for name in needs:
        run.require(name)
    require_available(datasets)
    if args.model is None:
        args.model = recorded["name"]
    lm = _load(args, run.load_record(), str(run.path))
    run.check_model(lm.info.fingerprint, lm.info.name)
    return run, lm


def cmd_sweep(args) -> None:
    from workbench.stages.sweep import SweepConfig, run_sweep

    config, rule = config_from_args(args, SweepConfig()), _rule(args)
    config.validate()  # unknown prompt sets are refused before the model loads
    rule.validate()
    run, lm = _model_for_run(args, needs=("candidates.safetensors",))
    with record_stage(run, "sweep"):
        frame = run_sweep(lm, run, config, rule)
    full = frame[frame.stage == "full"]
    print(f"scored {len(full)} candidates fully, {int((frame.stage == 'screened').sum())} screened out, "
          f"{int((frame.stage == 'skipped').sum())} skipped -> {run.file('sweep.csv')}; "
          f"`workbench select --run {run.path}` applies the rule")


def cmd_select(args) -> None:
    from workbench.stages.run_dir import RunDir
    from workbench.stages.select import select, sweep_rule

    run = RunDir(Path(args.run)).require_dir()
    rule = _rule(args, base=sweep_rule(run))
    rule.validate()
    gate_config = None
    if args.gate:
        from workbench.data import REGISTRY
        from workbench.stages.gate import GateConfig

        gate_config = GateConfig()
        gate_config.validate()
        gate_sets = [gate_config.harmful, gate_config.harmless, gate_config.pseudo_harmful,
                     gate_config.contrast_harmful, gate_config.contrast_benign]
        lm = _model_for_run(args, datasets=[n for n in gate_sets if n in REGISTRY])[1]
    else:
        lm = _model_for_run(args)[1] if rule.rerank_top_k else None  # the generation check needs the model
    with record_stage(run, "select"):
        result = select(run, rule, lm)
    for s in result["selections"]:
        print(f"λ={s['lam']}: pos {s['pos']}, layer {s['layer']}, ablation refusal score "
              f"{s['ablation_refusal_score_pseudo_harmful']:+.3f} "
              f"(baseline {result['baseline']['pseudo_harmful']:+.3f}), "
              f"KL {s['ablation_kl']:.3f}, harmful {s['ablation_refusal_score_harmful']:+.3f}")
    if gate_config is not None:
        from workbench.stages.gate import fit_gate, summary

        with record_stage(run, "gate"):
            record = fit_gate(lm, run, gate_config)
        print(summary(record) + f" -> {run.file('directions/gate.safetensors')}")


def run_config(args):
    """`workbench run`'s config: the `--config` file's (else the defaults), then every stage option given replacing
    its field (flags override the file); and the model the file names, or None. Returns (PipelineConfig, model,
    the options that overrode the file as {"stage.field": value})."""
    from workbench.stages.config_file import from_dict, load_toml, pop_model_keys
    from workbench.stages.pipeline import PipelineConfig

    base, model = PipelineConfig(), None
    if args.config:
        data = load_toml(args.config)
        keys = pop_model_keys(data, str(args.config))
        model = keys["model"]
        args.dtype = args.dtype or keys["dtype"]
        base = from_dict(PipelineConfig, data, where=str(args.config))
    return config_from_args(args, base), model, flat(given_values(args, PipelineConfig))


def cmd_run(args) -> None:
    from workbench.stages.pipeline import run_pipeline
    from workbench.stages.run_dir import RunDir

    config, model, overrides = run_config(args)
    if args.config and overrides:
        print(f"[config] {args.config}, overridden by the options " + ", ".join(f"{k} = {v!r}" for k, v in
                                                                                overrides.items()), flush=True)
    args.model = args.model or model or "smollm2-135m-safety"
    config.validate()
    from workbench.data import require_available
    from workbench.stages.data_needs import pipeline_datasets

    require_available(pipeline_datasets(config))  # every set the stages read, before the model loads
    run = RunDir(Path(args.run))
    recorded = (run.load_record() if not args.force and run.file("candidates.json").exists()
                and _readable(run.model_record) else None)
    run_pipeline(_load(args, recorded, str(run.path)), args.run, config, force=args.force)


def cmd_report(args) -> None:
    from workbench.stages.report import write_report
    from workbench.stages.run_dir import RunDir

    print(write_report(RunDir(Path(args.run)), args.out))


def cmd_compare(args) -> None:
    import pandas as pd

    from workbench.stages.compare import compare_runs, default_out, model_note, write_comparison
    from workbench.stages.run_dir import RunDir

    a, b = RunDir(Path(args.run_a)), RunDir(Path(args.run_b))
    comparison = compare_runs(a, b)
    if (note := model_note(comparison, a, b)) is not None:
        print(f"note: {note}")
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_columns", None,
                           "display.float_format", "{:.3f}".format):
        for title, frame in (("selections (A vs B)", comparison.selections),
                             ("compliance rates (B − A; paired: on the prompts both runs judged)", comparison.rates)):
            if frame is not None:
                print(f"\n{title}\n{frame.to_string(index=False)}")
    for path in write_comparison(comparison, a, b, args.out or default_out(a, b)):
        print(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(commands=(command,)).parse_args(argv)
    try:
        globals()[args.func](args)
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
