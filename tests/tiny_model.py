"""A tiny random chat model for the unit tier, built in the test session: no download, no real weights.

`build_tiny_chat_model(path)` writes a Hugging Face checkpoint directory that the workbench loads like any local
model (`load_model(str(path))`: the local-directory source, then the TransformerLens bridge):

- a byte-level BPE tokenizer (`TOKENIZER_VOCAB` tokens) trained in-process with `tokenizers` on the bundled prompts
  of the method's three sets (`data/prompts/{harmful,harmless,pseudo_harmful}.jsonl`) and the chat template's words,
  with the ChatML special tokens, eos `<|im_end|>` and its own pad token;
- a ChatML chat template (tests/fixtures/chat_templates/chatml.jinja) that inserts a default system turn, as
  SmolLM2's does, so the template prefix (system turn, user header) is shared by every prompt;
- a seeded random `LlamaForCausalLM` (4 layers, d_model 64, 4 heads, 2 KV heads, tied embeddings) whose init is
  scaled up so that it is not a near-uniform predictor (refusal scores vary across prompts with a spread of ≈ 3
  logits, ablations move logits, the sweep's candidates differ in their scores), and whose refusal tokens ("I",
  "A", "S": derived from "I", "As", "Sorry" as for any unknown tokenizer) are shifted so that refusal scores
  straddle 0: the paper's refusal-score filters keep about half of every bundled prompt set.

Loading goes through the same path as any model, so the chat format derives the EOI positions from the template
(6 tokens, `<|im_end|>`, `\n`, `<|im_start|>`, `ass`, `istant`, `\n`, as for SmolLM2) and the refusal tokens from
the vocabulary. Everything is deterministic (seeded), so a test can assert values computed on this model.
`TINY_RUN_*` are the settings of the `tiny_run` fixture (tests/conftest.py).
"""

import json
from pathlib import Path

import torch

from workbench.method.rule import SelectionRule
from workbench.stages.extract import ExtractConfig
from workbench.stages.sweep import SweepConfig

REPO = Path(__file__).resolve().parent.parent
CHATML_TEMPLATE = REPO / "tests" / "fixtures" / "chat_templates" / "chatml.jinja"
BUNDLED_PROMPTS = [REPO / "data" / "prompts" / f"{name}.jsonl" for name in ("harmful", "harmless", "pseudo_harmful")]
"""The method's three bundled sets, named (not globbed), so that a new bundled set does not change the tiny model."""

DEFAULT_SYSTEM = "You are a tiny test assistant."
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TOKENIZER_VOCAB = 512
N_LAYERS, D_MODEL, N_HEADS, N_KV_HEADS, D_MLP = 4, 64, 4, 2, 128
INIT_STD = 0.25
"""Weight init std (transformers' default is 0.02, which gives nearly uniform next-token distributions here)."""

# The `tiny_run` fixture's stages (tests/conftest.py): small enough for the unit tier, big enough to select.
TINY_RUN_EXTRACT = ExtractConfig(n_train=64)
TINY_RUN_SWEEP = SweepConfig(lams=(1.0, 0.0), n_val=16, n_screen=4, n_finalists=3)
TINY_RUN_RULE = SelectionRule(max_ablation_kl=10.0, r_max_ablation_kl=10.0)
"""A loose KL bound: ablating a direction moves this random model's logits far (KLs ≈ 1–3), and the run must select."""


def chat_template() -> str:
    """The ChatML fixture template with a default system turn when the messages bring none (like SmolLM2's)."""
    default_system = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + DEFAULT_SYSTEM
                      + "<|im_end|>\n' }}{% endif %}")
    return default_system + CHATML_TEMPLATE.read_text()


def training_texts() -> list[str]:
    """The tokenizer's training text: every bundled prompt, and the words of the template's turns."""
    texts = []
    for path in BUNDLED_PROMPTS:
        texts += [json.loads(line)["instruction"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    return texts + ["system\n" + DEFAULT_SYSTEM, "user\n", "assistant\n"] * 20


def build_tokenizer():
    """A fast byte-level BPE tokenizer with ChatML special tokens, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(training_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|pad|>", chat_template=chat_template())


def build_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=N_KV_HEADS, max_position_embeddings=512,
        initializer_range=INIT_STD, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    center_refusal_scores_(model, tokenizer)
    return model


def _mean_refusal_score(model, batch, refusal_tokens: list[int]) -> float:
    from workbench.method.refusal_math import refusal_score

    logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1]
    return refusal_score(logits, refusal_tokens).mean().item()


@torch.no_grad()
def center_refusal_scores_(model, tokenizer, n_per_set: int = 32) -> None:
    """Move the (tied) embedding rows of the refusal tokens along the mean last-position hidden state until the
    mean refusal score over the first `n_per_set` prompts of each bundled file is ≈ 0, so that the paper's
    refusal-score filters keep part of every prompt set (a random model's refusal tokens are as unlikely as any)."""
    from workbench.models.chat import ChatFormat
    from workbench.models.refusal_tokens import derive

    prompts = []
    for path in BUNDLED_PROMPTS:
        lines = path.read_text(encoding="utf-8").splitlines()[:n_per_set]
        prompts += [json.loads(line)["instruction"] for line in lines]
    batch = ChatFormat(tokenizer).tokenize(prompts)
    refusal_tokens = derive(tokenizer)
    hidden = model.model(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state[:, -1]
    direction = hidden.mean(0) / hidden.mean(0).norm()
    embedding = model.get_input_embeddings().weight
    original = embedding[refusal_tokens].clone()
    low, high = 0.0, 10.0
    for _ in range(20):  # bisection on the shift: the mean score rises with it
        shift = (low + high) / 2
        embedding[refusal_tokens] = original + shift * direction
        low, high = (shift, high) if _mean_refusal_score(model, batch, refusal_tokens) < 0 else (low, shift)


def build_tiny_chat_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny chat model's checkpoint (config, weights, tokenizer, chat template) into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def last_logits(lm, prompts):
    """Last-position logits of the hooked model (float32), for comparisons in tests."""
    batch = lm.chat.tokenize(prompts)
    return lm.model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1].float()


def plain_last_logits(model, lm, prompts):
    """Last-position logits of a plain transformers model on `lm`'s chat-formatted prompts."""
    batch = lm.chat.tokenize(prompts)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1].float()
