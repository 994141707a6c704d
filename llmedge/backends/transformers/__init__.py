"""Hugging Face transformers: safetensors, GPTQ, AWQ and NF4 checkpoints on CPU or CUDA, one
generation at a time per model (`backend`), with llmedge's sampling over its logits (`sampling`)."""
