"""The generation cache: what a long generation produced survives an interruption, and a rerun only generates
the rest (tiny chat model)."""

import pytest

from profilekit import profiler
from profilekit.llm.sampler import SamplingConfig
from profilekit.profiler import ChatLM, GenerationCache

CONFIG = SamplingConfig(max_new_tokens=4, temperature=0.7, seed=1)


@pytest.mark.fast
def test_an_interrupted_generation_keeps_what_it_generated(tiny_chat_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(profiler, "CACHE_FLUSH_TEXTS", 2)
    chat = ChatLM(tiny_chat_dir, batch_size=2)
    conversations = [[{"role": "user", "content": f"History: [Movie {u} | {1 + u % 5}]. Summarise."}] for u in range(7)]
    cache = GenerationCache(tmp_path, chat.version)
    generate, batches = chat.sampler.generate, []

    def interrupted(prompts, config, samples=1):
        if len(batches) == 2:
            raise KeyboardInterrupt
        batches.append(len(prompts))
        return generate(prompts, config, samples)

    monkeypatch.setattr(chat.sampler, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        chat.generate(conversations, CONFIG, cache)
    assert len(cache.load()) == 4  # the two batches finished before the interruption

    monkeypatch.setattr(chat.sampler, "generate", generate)
    rerun = chat.generate(conversations, CONFIG, cache)
    assert rerun.generated_now == 3 and len(cache.load()) == 7
    again = chat.generate(conversations, CONFIG, cache)
    assert again.generated_now == 0 and again.texts == rerun.texts
