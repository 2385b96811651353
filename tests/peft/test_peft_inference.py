"""What generation gets from an adapter directory (`mindtune.peft.inference_weights`), BitFit's fold into a
qkv_bias model, prompt initialisation, and one-line errors for bad PEFT input."""
import dataclasses
import os

import numpy as np
import pytest

from peft_helpers import SPEC, adapt, base_weights, build_lm, rel_err

from mindtune.config.schema import PeftConfig
from mindtune.errors import CheckpointError, ConfigError

TINY_TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "mindtune", "assets",
                              "tiny_tokenizer")


@pytest.fixture(scope="module")
def weights():
    return base_weights()


@pytest.fixture(scope="module")
def base_dir(weights, tmp_path_factory):
    from mindtune.models.model_dir import write_model_dir
    return write_model_dir(str(tmp_path_factory.mktemp("base") / "model"), SPEC, weights, {},
                           tokenizer_dir=TINY_TOKENIZER)


def _adapter(path, base_dir, cfg, tensors):
    from mindtune.models.model_dir import write_model_dir
    return write_model_dir(str(path), SPEC, tensors, {"base_model": base_dir, "base_seed": 0,
                                                      "peft": dataclasses.asdict(cfg)}, adapter=True)


def test_prompt_and_prefix_adapters_give_base_weights_and_extras(weights, base_dir, tmp_path):
    from mindtune.models.loading import resolve_model
    from mindtune.peft import generation_weights, inference_weights
    from mindtune.peft.virtual import PREFIX_KV, PROMPT_EMBEDDINGS

    rng = np.random.default_rng(0)
    prompt = rng.standard_normal((3, SPEC.hidden_size)).astype(np.float32)
    path = _adapter(tmp_path / "prompt", base_dir, PeftConfig(method="ptuning", num_virtual_tokens=3),
                    {PROMPT_EMBEDDINGS: prompt})
    spec, got, extras = inference_weights(path)
    assert spec == SPEC and sorted(got) == sorted(weights) and list(extras) == ["soft_prompt"]
    np.testing.assert_array_equal(extras["soft_prompt"], prompt)
    with pytest.raises(CheckpointError, match="needs a soft prompt"):
        generation_weights(resolve_model(path))

    kv = rng.standard_normal((SPEC.num_layers, 2, SPEC.num_kv_heads, 5, SPEC.head_dim)).astype(np.float32)
    path = _adapter(tmp_path / "prefix", base_dir, PeftConfig(method="prefix", num_virtual_tokens=5), {PREFIX_KV: kv})
    _, got, extras = inference_weights(path)
    pairs = extras["prefix_kv"]
    assert len(pairs) == SPEC.num_layers and pairs[1][0].shape == (SPEC.num_kv_heads, 5, SPEC.head_dim)
    np.testing.assert_array_equal(pairs[1][1], kv[1, 1])
    np.testing.assert_array_equal(got["model.layers.0.attention.wq.weight"], weights["model.layers.0.attention.wq.weight"])


def test_bitfit_folds_into_a_qkv_bias_model(weights, base_dir, tmp_path):
    """Trained q/k/v biases on a bias-free Llama fold into a Qwen2.5-layout model: the numpy Llama with the
    folded weights reproduces the adapted network, and the generation hook refuses the spec change."""
    import mindspore as ms

    from reference.numpy_llama import llama_logits

    from mindtune.models.loading import resolve_model
    from mindtune.peft import adapter_weights, generation_weights, inference_weights

    cfg = PeftConfig(method="bitfit")
    _, adapted = adapt(weights, cfg)
    assert {p.name for p in adapted.trainable} == {f"model.layers.{i}.attention.{n}.bias"
                                                   for i in range(SPEC.num_layers) for n in ("wq", "wk", "wv")}
    rng = np.random.default_rng(2)
    for p in adapted.trainable:
        p.set_data(ms.Tensor((rng.standard_normal(p.shape) * 0.5).astype(np.float32)))
    ids = rng.integers(3, SPEC.vocab_size, 12)
    logits = adapted.network(ms.Tensor(np.stack([ids, ids]).astype(np.int32)))[0].asnumpy()[0]
    path = _adapter(tmp_path / "bitfit", base_dir, cfg, adapter_weights(adapted))
    spec, merged, extras = inference_weights(path)
    assert spec.qkv_bias and not extras
    assert rel_err(logits, llama_logits(merged, spec, ids)) < 1e-5
    assert rel_err(llama_logits(weights, SPEC, ids), llama_logits(merged, spec, ids)) > 1e-2
    with pytest.raises(CheckpointError, match="merge-lora"):
        generation_weights(resolve_model(path))


def test_houlsby_adapters_are_refused_for_generation(base_dir, tmp_path):
    from mindtune.peft import inference_weights

    path = _adapter(tmp_path / "adapter", base_dir, PeftConfig(method="adapter"), {"x": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match="cannot be used for generation"):
        inference_weights(path)


def test_prompt_init_from_text_and_vocab(weights):
    from mindtune.data.tokenizer import load_tokenizer
    from mindtune.peft.prompt import initial_prompt

    tok = load_tokenizer(TINY_TOKENIZER)
    table = weights["model.tok_embeddings.embedding_weight"]
    cfg = PeftConfig(method="prompt", num_virtual_tokens=7, prompt_init="text", prompt_init_text="the sum")
    ids = [i for i in tok.encode("the sum") if i != tok.bos_id]
    assert 0 < len(ids) < 7
    np.testing.assert_array_equal(initial_prompt(cfg, table, SPEC, tok), table[np.resize(ids, 7)])
    cfg = PeftConfig(method="prompt", num_virtual_tokens=7, prompt_init="vocab")
    rows = initial_prompt(cfg, table, SPEC, tok, seed=1)
    picked = [int(np.argmin(np.abs(table - r).sum(1))) for r in rows]
    assert not {SPEC.pad_token_id, SPEC.bos_token_id, SPEC.eos_token_id} & set(picked)
    np.testing.assert_array_equal(rows, table[picked])
    rows = initial_prompt(PeftConfig(method="prompt", prompt_init="random"), table, SPEC)
    assert rows.shape == (16, SPEC.hidden_size) and abs(rows.std() / table.std() - 1) < 0.2


@pytest.mark.parametrize("keys, saved, error, message", [
    (dict(method="prompt", prompt_init="text"), None, ConfigError, "peft.prompt_init_text: required"),
    (dict(method="lora", target_modules=["nope"]), None, ConfigError, "peft.target_modules"),
    (dict(method="adapter", adapter_modules=["nope"]), None, ConfigError, "peft.adapter_modules"),
    (dict(method="prompt", num_virtual_tokens=4), {"peft.prompt_embeddings": np.zeros((2, 64), np.float32)},
     ConfigError, "peft.num_virtual_tokens: 4, but the adapter"),
    (dict(method="ptuning_v2", num_virtual_tokens=2), {"other": np.zeros(2, np.float32)}, CheckpointError,
     "lacks tensor 'peft.prefix_kv'"),
    (dict(method="lora", rank=4), {"model.layers.0.attention.wq.mindpet_delta_lora_a": np.zeros((4, 64))},
     CheckpointError, "adapter lacks tensor"),
])
def test_bad_peft_input_is_one_clear_error(weights, keys, saved, error, message):
    from mindtune.peft import apply_peft

    cfg = PeftConfig(**keys)
    with pytest.raises(error, match=message.replace("(", r"\(")) as info:
        apply_peft(build_lm(weights, cfg), cfg, SPEC, saved=saved, where="RUN/model")
    assert "\n" not in str(info.value)


def test_ptuning_mlp_encoder_folds_to_the_prompt_the_network_uses(weights):
    """The MLP prompt encoder (the LSTM one is trained in test_peft_methods): its folded export is exactly the
    soft prompt in front of the tokens."""
    import mindspore as ms

    from mindtune.peft import adapter_weights, apply_peft
    from mindtune.peft.virtual import PROMPT_EMBEDDINGS

    cfg = PeftConfig(method="ptuning", num_virtual_tokens=3, encoder="mlp", encoder_hidden_size=16)
    _, adapted = adapt(weights, cfg, seed=2)
    assert any("head.4.weight" in p.name for p in adapted.trainable)     # linear-relu-linear-relu-linear
    ids = ms.Tensor(np.random.default_rng(0).integers(3, SPEC.vocab_size, (2, 12)).astype(np.int32))
    logits = adapted.network(ids)[0].asnumpy()
    folded = adapter_weights(adapted)
    assert list(folded) == [PROMPT_EMBEDDINGS] and folded[PROMPT_EMBEDDINGS].shape == (3, SPEC.hidden_size)
    again = apply_peft(build_lm(weights, cfg), cfg, SPEC, saved=folded)
    assert rel_err(again.network(ids)[0].asnumpy(), logits) < 1e-5


def test_preset_base_with_spec_overrides_is_redrawn_with_the_adapter_spec(tmp_path):
    """A run on `model.path: tiny` with `model.spec` overrides saves its adapter with the overridden spec; the
    base weights for generation must have that spec's shapes (the bare preset's would not fit)."""
    from dataclasses import replace

    from mindtune.models.build import random_weights
    from mindtune.models.model_dir import write_model_dir
    from mindtune.peft import inference_weights
    from mindtune.peft.virtual import PROMPT_EMBEDDINGS

    spec = replace(SPEC, num_layers=3, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=48)
    cfg = PeftConfig(method="prompt", num_virtual_tokens=2)
    path = write_model_dir(str(tmp_path / "a"), spec, {PROMPT_EMBEDDINGS: np.ones((2, 32), np.float32)},
                           {"base_model": "tiny", "base_seed": 5, "peft": dataclasses.asdict(cfg)}, adapter=True)
    got_spec, got, extras = inference_weights(path)
    assert got_spec == spec and extras["soft_prompt"].shape == (2, 32)
    expected = random_weights(spec, 5)
    assert sorted(got) == sorted(expected)
    np.testing.assert_array_equal(got["model.layers.2.feed_forward.w1.weight"],
                                  expected["model.layers.2.feed_forward.w1.weight"])
