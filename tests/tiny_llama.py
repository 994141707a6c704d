"""A tiny random Llama in Hugging Face format (safetensors), built with `transformers`.

Two layers, hidden size 256 (a multiple of the 256-value K-quant blocks) and a 512-piece
SentencePiece tokenizer trained on the shipped evaluation text, so conversion, every quantization
type and perplexity run in seconds on two cores.
"""

from __future__ import annotations

import io
from pathlib import Path

from quantizers.perplexity import eval_text

VOCAB_SIZE = 512


def build_tiny_llama(folder: Path) -> Path:
    """Write config.json, model.safetensors and tokenizer.model into `folder` (once)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import sentencepiece
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model_proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(eval_text().splitlines()),
        model_writer=model_proto,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=128,  # short chunks keep perplexity runs quick
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    staging = folder.with_name(folder.name + ".building")
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(staging, safe_serialization=True)
    (staging / "tokenizer.model").write_bytes(model_proto.getvalue())
    staging.rename(folder)
    return folder
