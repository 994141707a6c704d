"""Making smaller models: GGUF conversion and quantization on top of llmedge's public API.

`quantizers.gguf` quantizes along llama.cpp's ladder (Q2_K to Q8_0) and measures the result;
`quantizers.gguf_convert` turns Hugging Face safetensors into GGUF with llama.cpp's converter.
`quantizers.gptq`, `quantizers.awq` and `quantizers.nf4` make GPTQ, AWQ and NF4 versions of a
safetensors model (`quantizers.hf_quantize` is their shared flow) with the same quality report.
Importing this package loads neither llama.cpp, the converter nor torch.
"""
