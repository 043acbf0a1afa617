"""Build small tokenizers and GPT-style models locally (no hub downloads): for tests, the demo and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS, PAD, UNK = "<|endoftext|>", "<|pad|>", "<|unk|>"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, kind: str = "bpe"
) -> PreTrainedTokenizerFast:
    """A byte-level BPE ("bpe") or whitespace word-level ("word") tokenizer trained on `texts`.

    EOS doubles as BOS (GPT-2 style, not prepended); PAD is a token of its own so that padding never
    looks like a real end of text.
    """
    specials = [EOS, PAD, UNK]
    trainer: trainers.BpeTrainer | trainers.WordLevelTrainer
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
        )
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left"
    )


def build_gpt2(
    tokenizer: PreTrainedTokenizerFast,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_positions: int = 256,
    dropout: float = 0.0,
    seed: int = 0,
) -> GPT2LMHeadModel:
    import torch

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def build_llama(
    tokenizer: PreTrainedTokenizerFast,
    n_layer: int = 2,
    hidden_size: int = 64,
    n_head: int = 4,
    max_position_embeddings: int = 256,
    seed: int = 0,
) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


# Each architecture's own names for its sizes; `build_tiny` fills in the numbers.
ARCHITECTURES = ("gpt2", "gpt_neox", "opt", "llama", "qwen2", "mistral", "gemma", "phi")


def tiny_config(model_type: str, tokenizer: PreTrainedTokenizerFast, hidden: int = 32, n_layer: int = 1):
    """A random-weight config of `model_type` with 2 heads (1 key-value head where the architecture has
    grouped-query attention), 128 positions and the tokenizer's vocabulary and special tokens."""
    from transformers import AutoConfig

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    sizes: dict = {
        "hidden_size": hidden,
        "num_hidden_layers": n_layer,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden,
        "max_position_embeddings": 128,
    }
    if model_type == "gpt2":
        sizes = {"n_embd": hidden, "n_layer": n_layer, "n_head": 2, "n_positions": 128}
    elif model_type == "opt":
        sizes = {k: v for k, v in sizes.items() if k != "intermediate_size"}
        sizes.update(ffn_dim=2 * hidden, word_embed_proj_dim=hidden)
    elif model_type in ("llama", "qwen2", "mistral", "gemma"):
        sizes.update(num_key_value_heads=1, head_dim=hidden // 2)
    return AutoConfig.for_model(model_type, **ids, **sizes)


def build_tiny(
    model_type: str, tokenizer: PreTrainedTokenizerFast, hidden: int = 32, n_layer: int = 1, seed=0
):
    """A random-weight causal LM of any of ARCHITECTURES (or another type `tiny_config` can size)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type, tokenizer, hidden, n_layer))


def save(model, tokenizer, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
