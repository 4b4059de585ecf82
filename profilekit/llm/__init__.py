"""The profiler LLM in JAX: weight export, tunix model loading, batched sampling."""
