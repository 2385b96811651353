"""Memory-model terms against hand computations on a small model."""
import pytest

from mindtune.models.spec import ModelSpec
from mindtune.parallel.hardware import GB, get_hardware
from mindtune.parallel.memory import (Strategy, Workload, activation_bytes, adapter_params, estimate_memory,
                                      layer_activation_bytes, layer_params, logits_bytes)

# vocab 1000, hidden 64, 4 layers, 4 heads of 16 (2 KV heads -> kv width 32), SwiGLU 128, untied output
SPEC = ModelSpec(vocab_size=1000, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=128)


def wl(**kw):
    base = dict(spec=SPEC, seq_length=16, compute_dtype="float16", param_dtype="float32", flash_attention=False)
    base.update(kw)
    return Workload(**base)


def test_layer_params_by_hand():
    # q,o: 64*64 each; k,v: 64*32 each; w1,w2,w3: 64*128 each
    assert layer_params(SPEC) == (2 * 4096 + 2 * 2048 + 3 * 8192, 128)
    assert SPEC.num_parameters() == 4 * (36864 + 128) + 2 * 64000 + 64


def test_layer_activations_by_hand():
    s = Strategy(micro_batch_size=2)
    # s*b = 32 tokens, 2 bytes: norms+qkv-in+mlp-in 4*64; q,out 2*64, k,v 2*32, SwiGLU 4*128
    # scores: 16*16 per head-batch, 4 heads, 2 sequences, 2 bytes + 4 bytes fp32 softmax
    expected = 2 * 32 * 256 + 2 * 32 * (128 + 64 + 512) + 16 * 16 * 2 * 4 * 6
    assert layer_activation_bytes(wl(), s) == expected == 73728
    # flash attention (or selective recompute) drops the scores term
    assert layer_activation_bytes(wl(flash_attention=True), s) == 73728 - 12288
    assert layer_activation_bytes(wl(), Strategy(micro_batch_size=2, recompute="selective")) == 73728 - 12288
    # full recompute keeps only the layer input: 32 tokens x 64 x 2 bytes
    assert layer_activation_bytes(wl(), Strategy(micro_batch_size=2, recompute="full")) == 4096


def test_tensor_and_sequence_parallel_split_activations():
    w = wl(flash_attention=True)
    replicated, split = 2 * 32 * 256, 2 * 32 * 704
    assert layer_activation_bytes(w, Strategy(micro_batch_size=2, mp=2)) == replicated + split / 2
    assert layer_activation_bytes(w, Strategy(micro_batch_size=2, mp=2, seq_parallel=True)) == \
        (replicated + split) / 2


def test_frozen_projections_keep_fewer_activations():
    # LoRA on q/v only: the MLP input (64) and the w2 input (128) serve frozen weights only
    w = wl(flash_attention=True, peft="lora", lora_targets=("wq", "wv"))
    assert layer_activation_bytes(w, Strategy(micro_batch_size=2)) == 2 * 32 * (3 * 64) + 2 * 32 * (192 + 3 * 128)


def test_pipeline_keeps_pp_micro_batches_in_flight_on_first_stage():
    w = wl(flash_attention=True)
    per_layer = layer_activation_bytes(w, Strategy(micro_batch_size=1, pp=2, micro_batches=8))
    embed = 2 * 16 * 64
    first = activation_bytes(w, Strategy(micro_batch_size=1, pp=2, micro_batches=8), "first")
    assert first == 2 * (2 * per_layer + embed)      # 2 layers per stage, min(pp, m) = 2 micro-batches
    assert activation_bytes(w, Strategy(micro_batch_size=1, pp=2, micro_batches=8), "last") == 2 * per_layer


def test_weights_gradients_optimizer_by_hand():
    hw = get_hardware("910b")
    w = wl()
    params = SPEC.num_parameters()   # whole model on one device
    m = estimate_memory(w, Strategy(), hw)
    assert m.persistent["weights"] == pytest.approx(params * 4)
    assert m.persistent["gradients"] == pytest.approx(params * 4)
    assert m.persistent["optimizer states"] == pytest.approx(params * 8)
    # optimizer sharding over dp=4 splits weights, states and (without a pipeline) gradients
    sh = estimate_memory(w, Strategy(dp=4, optimizer_shard=True), hw)
    assert sh.persistent["weights"] == pytest.approx(params * 4 / 4)
    assert sh.persistent["optimizer states"] == pytest.approx(params * 8 / 4)
    assert sh.persistent["gradients"] == pytest.approx(params * 4 / 4)
    assert m.total - sh.total == pytest.approx(params * 16 * 3 / 4)


def test_peft_freezes_base_and_counts_adapter():
    hw = get_hardware("910b")
    w = wl(peft="lora", lora_rank=4, lora_targets=("wq", "wv"))
    # per layer: q: 4*(64+64), v: 4*(64+32)
    assert adapter_params(w) == 4 * (4 * 128 + 4 * 96)
    m = estimate_memory(w, Strategy(), hw)
    assert m.persistent["weights"] == 0 and m.persistent["optimizer states"] == 0
    assert m.persistent["frozen weights"] == pytest.approx(SPEC.num_parameters() * 4)
    assert m.persistent["adapter"] == pytest.approx(adapter_params(w) * 4 * 4)


def test_logits_split_by_vocab_parallel_only():
    w = wl()
    s = Strategy(micro_batch_size=2)
    assert logits_bytes(w, s) == 32 * 1000 * 8
    assert logits_bytes(w, Strategy(micro_batch_size=2, mp=2, vocab_emb_dp=False)) == 32 * 1000 * 8 / 2
    assert logits_bytes(w, Strategy(micro_batch_size=2, mp=2, vocab_emb_dp=True)) == 32 * 1000 * 8


def test_rlhf_stages_hold_more_models():
    hw = get_hardware("910b")
    s = Strategy()
    sft = estimate_memory(wl(), s, hw)
    ppo = estimate_memory(wl(stage="ppo"), s, hw)
    dpo = estimate_memory(wl(stage="dpo"), s, hw)
    weights = SPEC.num_parameters() * 4
    assert ppo.persistent["weights"] == pytest.approx(2 * weights)               # actor + critic
    assert ppo.persistent["reference/reward models"] == pytest.approx(2 * weights)
    assert ppo.persistent["generator weights"] == pytest.approx(weights / 2)     # bf16 copy for rollouts
    assert ppo.phases["training"]["activations"] == pytest.approx(2 * sft.phases["training"]["activations"])
    assert dpo.persistent["reference model"] == pytest.approx(weights)
    assert "rollout" in ppo.phases and ppo.total > dpo.total > sft.total


def test_ppo_with_lora_holds_one_frozen_base():
    hw, s = get_hardware("910b"), Strategy()
    sft = estimate_memory(wl(peft="lora"), s, hw)
    ppo = estimate_memory(wl(stage="ppo", peft="lora"), s, hw)
    dpo = estimate_memory(wl(stage="dpo", peft="lora"), s, hw)
    # actor, reference, critic and reward model share the base: counted once, as in SFT
    assert ppo.persistent["frozen weights"] == sft.persistent["frozen weights"] > 0
    assert "reference/reward models" not in ppo.persistent
    # two trained adapters (weights, gradients, 2 moments) and two frozen copies: 10x one adapter's weights
    assert ppo.persistent["adapter"] == pytest.approx(sft.persistent["adapter"] * 10 / 4)
    assert dpo.persistent["reference model"] == pytest.approx(sft.persistent["adapter"] / 4)


def test_memory_breakdown_total_is_sum_of_rows():
    m = estimate_memory(wl(), Strategy(micro_batch_size=2), get_hardware("910a"))
    assert m.total == pytest.approx(sum(v for _, v in m.rows()))
    assert m.as_gb()["total"] == pytest.approx(m.total / GB, abs=1e-3)
