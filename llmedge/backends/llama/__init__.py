"""llama.cpp through llama-cpp-python's C API: the backend and its loaded model (`backend`), the
continuous-batching scheduler and its slots, sampling, speculative drafts and the plan of which
guesses pay (`draft_plan`), tokenizing special tokens, and the pre-flight test load of a new
model file in a child process (`preflight`, `probe`)."""
