"""The real model, SmolLM2-135M-Instruct from its GGUF file (tools/get_smollm2.sh fetches it): tokenizer and chat
template against transformers' own GGUF loader, logits against the numpy reference, cached vs uncached greedy.

Run with `pytest -m slow tests/models/test_smollm2.py`; set MINDTUNE_SMOLLM2_GGUF to use another copy."""
import os

import numpy as np
import pytest

from reference.numpy_llama import llama_logits
from reference.tiny import smollm2_gguf

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(smollm2_gguf()),
                                 reason=f"{smollm2_gguf()} is absent: run tools/get_smollm2.sh")]

TEXTS = ["Hello, world! How are you doing today?", "The year 2024 had 366 days; π ≈ 3.14159.",
         "  two leading spaces\n\nnew paragraph\ttab", "def f(x):\n    return x ** 2  # squares",
         "<|im_start|>user\nWhat's up?<|im_end|>\n", "Ünïcödé, emoji 🚀🌊 and CJK 日本語のテキスト",
         "don't won't they'll I'm we've", "URLs like https://example.com/a?b=c&d=1 and e-mails a@b.co"]
CHATS = [[{"role": "user", "content": "Write a short poem about the sea."}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
          {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mindtune.models.convert import convert

    return convert(smollm2_gguf(), str(tmp_path_factory.mktemp("smollm2") / "model"))


@pytest.fixture(scope="module")
def resolved(model_dir):
    from mindtune.models.loading import resolve_model

    return resolve_model(model_dir)


def test_tokenizer_and_chat_template_match_transformers(resolved, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    # transformers reads GGUF tokenizers with the gguf package only, but refuses without torch; allow it
    monkeypatch.setattr(gguf_utils, "is_torch_available", lambda: True)
    directory, name = os.path.split(smollm2_gguf())
    reference = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    ours = resolved.tokenizer
    assert ours.vocab_size == len(reference) == 49152
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=False) == reference.decode(ids) == text
    for messages in CHATS:
        for gen_prompt in (False, True):
            assert ours.apply_chat_template(messages, gen_prompt) == reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen_prompt)
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 0)
    assert resolved.spec.pad_token_id == 0


def test_logits_match_numpy_reference(resolved):
    import mindspore as ms

    from mindtune.device import resolve_profile, setup_context
    from mindtune.models.loading import build_causal_lm

    tok = resolved.tokenizer
    ids = tok.encode(tok.apply_chat_template(CHATS[0], add_generation_prompt=True))[-20:]
    assert len(ids) >= 12
    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    net = build_causal_lm(resolved, profile, seq_length=len(ids), seed=0)
    logits, _ = net(ms.Tensor(np.array([ids], np.int32)))
    ref = llama_logits(resolved.base_weights(0), resolved.spec, ids)
    rel = np.abs(logits.asnumpy()[0] - ref).max() / np.abs(ref).max()
    assert rel <= 1e-5, rel


def test_greedy_32_tokens_cached_equals_uncached(resolved):
    from mindtune.device import resolve_profile, setup_context
    from mindtune.generation import Generator
    from mindtune.generation.uncached import greedy_uncached
    from mindtune.models.loading import build_causal_lm

    tok = resolved.tokenizer
    prompts = [tok.encode(tok.apply_chat_template(c, add_generation_prompt=True)) for c in CHATS]
    assert len(prompts[0]) != len(prompts[1])      # left padding is exercised
    profile = resolve_profile("cpu")
    setup_context(profile, graph_mode=True, seed=0)
    weights = resolved.base_weights(0)
    cached = Generator(resolved.spec, weights, profile, batch_size=2).generate(prompts, 32, eos_ids=[])
    seq = max(len(p) for p in prompts) + 32
    net = build_causal_lm(resolved, profile, seq_length=seq, seed=0, batch_size=2)
    uncached = greedy_uncached(net, prompts, 32, seq, resolved.spec.pad_token_id)
    assert cached.rows() == uncached
    text = tok.decode(cached.rows()[0])
    assert "sea" in text.lower() or "wave" in text.lower(), text   # a real model answers the prompt
