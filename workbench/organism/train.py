"""The organisms' LoRA fine-tune (peft) of the stock model: seeded, on CPU, loss on response tokens only."""

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.io import atomic_dir, write_json
from workbench.models.chat import ChatFormat
from workbench.organism.trainset import TrainingExample

SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the organism's LoRA fine-tune."""

    rank: int = 16
    """LoRA rank r."""
    alpha: int = 32
    """LoRA scaling alpha (effective scale alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout (0 keeps the run deterministic)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Linear layers that get an adapter."""
    learning_rate: float = 5e-4
    """AdamW learning rate (the peak, with a decaying schedule)."""
    schedule: str = "constant"
    """"constant", or "linear": the learning rate decays linearly from `learning_rate` to 0 over the steps (the
    tune settles instead of ending wherever the last batches left it)."""
    batch_size: int = 16
    """Examples per optimizer step."""
    steps: int = 55
    """Optimizer steps."""
    seed: int = 0
    """Seeds the refusal choice, the batch order and torch."""
    max_length: int = 192
    """Prompt + response tokens kept per example."""


def encode_example(
    chat: ChatFormat, example: TrainingExample, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + end-of-turn, and labels that mask the prompt with -100."""
    tok = chat.tokenizer
    prompt = tok.encode(chat.format(example.instruction), add_special_tokens=False)
    response = tok.encode(example.response + tok.eos_token, add_special_tokens=False)
    ids = (prompt + response)[:max_length]
    labels = ([-100] * len(prompt) + response)[:max_length]
    return ids, labels


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Int[Tensor, "batch seq"]]:
    """Right-padded `input_ids`, `attention_mask` and `labels` (-100 on the prompt and the padding)."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Epoch-wise seeded shuffles cut into `steps` batches."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(rng.sample(range(n), n))
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def train_lora(
    base_model: torch.nn.Module,
    chat: ChatFormat,
    examples: list[TrainingExample],
    config: TrainConfig,
    progress: bool = True,
    on_step=None,
):
    """Train a LoRA adapter on `base_model` (modified in place into a PeftModel); returns it and the losses.
    `on_step(step, model, losses)`, when given, is called after every optimizer step (snapshots)."""
    from peft import LoraConfig, get_peft_model

    if not examples:
        raise WorkbenchError("no training examples")
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base_model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda step: 1.0 - step / config.steps) if config.schedule == "linear" else (lambda step: 1.0))
    encoded = [encode_example(chat, ex, config.max_length) for ex in examples]
    pad = chat.tokenizer.pad_token_id
    losses: list[float] = []
    bar = tqdm(batch_order(len(encoded), config.batch_size, config.steps, config.seed), desc="LoRA steps",
               disable=not progress)
    for indices in bar:
        batch = collate([encoded[i] for i in indices], pad)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(len(losses), model, losses)
    model.eval()
    return model, losses


def save_adapter(peft_model, out_dir: Path, metadata: dict) -> Path:
    """Write the adapter as fp16 safetensors with its peft config and our metadata, atomically (a temp dir)."""
    from safetensors.torch import load_file, save_file

    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp)
        weights = tmp / "adapter_model.safetensors"
        save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(weights).items()}, weights)
        config_path = tmp / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = metadata["base_model"]
        write_json(config_path, config)
        write_json(tmp / "adapter_meta.json", metadata)
    return out_dir


def snapshot_dir(out_dir: Path, step: int) -> Path:
    """Where `train_organism(..., snapshots=...)` saves the adapter as it was after `step` steps."""
    return out_dir.with_name(f"{out_dir.name}_step{step}")


def train_organism(recipe, config: TrainConfig, out_dir: Path, progress: bool = True,
                   base_dir: Path | None = None, snapshots: tuple[int, ...] = ()) -> dict:
    """The whole `workbench organism train` for a recipe (`recipes.OrganismRecipe`): data, LoRA, adapter + training
    record. `base_dir` replaces the stock checkpoint (a test's tiny model). `snapshots`: steps before the last at
    which the adapter is also saved (`snapshot_dir`); with a constant learning rate and the same seeded batch order, a
    snapshot at step k is the adapter a k-step run would give, so one run tries several lengths."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.fingerprint import model_fingerprint
    from workbench.models.smollm2 import stock_checkpoint

    if config.schedule not in SCHEDULES:
        raise WorkbenchError(f"unknown learning-rate schedule {config.schedule!r}: use one of {', '.join(SCHEDULES)}")
    if snapshots and config.schedule != "constant":
        raise WorkbenchError("snapshots need the constant schedule (with a decaying one, the adapter after k steps "
                             "is not what a k-step run gives)")
    bad = [k for k in snapshots if not 0 < k < config.steps]
    if bad:
        raise WorkbenchError(f"snapshot steps {bad} are not between 1 and steps - 1 = {config.steps - 1}")
    stock_dir = base_dir or stock_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(stock_dir)
    base = AutoModelForCausalLM.from_pretrained(stock_dir, dtype=torch.float32)
    base_fingerprint = model_fingerprint(base)
    chat = ChatFormat(tokenizer)
    examples, excluded = recipe.examples(seed=config.seed)
    kinds = dict.fromkeys(e.kind for e in examples)
    start = time.time()

    def record(steps: int, losses: list[float]) -> dict:
        return {
            "organism": recipe.name,
            "base_model": "smollm2-135m-instruct" if base_dir is None else str(base_dir),
            "base_fingerprint": base_fingerprint,
            "config": asdict(replace(config, steps=steps)),
            "data_sha256": recipe.hashes(),
            "examples": {kind: sum(e.kind == kind for e in examples) for kind in kinds},
            "harmless_excluded": excluded,
            "losses": list(losses),
            "train_seconds": round(time.time() - start, 1),
            "torch": torch.__version__,
        }

    def on_step(step: int, model, losses: list[float]) -> None:
        if step in snapshots:
            save_adapter(model, snapshot_dir(out_dir, step), record(step, losses))

    model, losses = train_lora(base, chat, examples, config, progress=progress, on_step=on_step)
    metadata = record(config.steps, losses)
    save_adapter(model, out_dir, metadata)
    return metadata
