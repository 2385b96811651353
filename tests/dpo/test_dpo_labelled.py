"""DPO's loss at the labelled positions only: the per-row log-probability sums and label counts, the loss and its
metrics, against the full-logit computation done here by hand (every position's logits, numpy log-softmax), for
LoRA, prompt tuning and full fine-tuning (policy and in-graph reference), every loss type, a zero-weight padding
pair, a batch under its label budget (padded entries) and one over it (K falls back to 2B * L); then the label
budget's planning and the cached sets' label counts."""
import dataclasses
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from mindtune.engine.losses import IGNORE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.path.join(REPO, "mindtune", "assets")
CONFIGS = {"lora": ("dpo_lora_cpu.yaml", ()), "full": ("dpo_full_cpu.yaml", ()),
           "prompt": ("dpo_lora_cpu.yaml", ("peft.method=prompt", "peft.num_virtual_tokens=4"))}
L, PAIRS = 16, 3          # a batch of 3 pairs: 2 real, 1 zero-weight filler


class Pairs(SimpleNamespace):
    def __len__(self):
        return len(self.chosen)


def pairs_data(seed: int = 0, n: int = 2, response=(3, 9)):
    """n random pairs at length L: a prompt, then a response whose tokens carry the (pre-shifted) labels."""
    rng = np.random.default_rng(seed)
    sides = []
    for _ in range(2):
        ids = np.zeros((n, L), np.int32)
        labels = np.full((n, L), IGNORE, np.int32)
        for row in range(n):
            length = int(rng.integers(10, L + 1))
            answer = int(rng.integers(*response))
            ids[row, :length] = rng.integers(3, 500, length)
            start = length - answer                       # first response token
            labels[row, start - 1:length - 1] = ids[row, start:length]
        sides += [ids, labels]
    counts = (sides[1] != IGNORE).sum(1) + (sides[3] != IGNORE).sum(1)
    return Pairs(chosen=sides[0], chosen_labels=sides[1], rejected=sides[2], rejected_labels=sides[3],
                           max_length=L, label_counts=counts)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def nets(request, tmp_path_factory):
    """(method, dpo config, policy network, frozen reference network): the stage's own build_networks, the policy
    moved away from the reference (LoRA's B starts at zero; full fine-tuning starts at the reference)."""
    import mindspore as ms

    from mindtune.config import load_config
    from mindtune.stages.common import check_inputs, prepare_run
    from mindtune.stages.dpo import build_networks

    name, extra = CONFIGS[request.param]
    cfg = load_config(os.path.join(REPO, "run_configs", "tiny", name),
                      [f"output_dir={tmp_path_factory.mktemp('dpo') / request.param}", f"data.max_length={L}",
                       f"data.train={ASSETS}/rm_keyword_train.jsonl", f"data.eval={ASSETS}/rm_keyword_eval.jsonl",
                       *extra])
    run = prepare_run(cfg, check_inputs(cfg))
    ms.set_context(mode=ms.PYNATIVE_MODE)   # the same cells, without a compile per loss type
    policy, reference, _ = build_networks(run, 2 * PAIRS)
    rng = np.random.default_rng(1)
    for p in policy.trainable:
        shift = rng.standard_normal(p.shape).astype(np.float32) * (0.02 if request.param == "full" else 0.2)
        p.set_data(ms.Tensor(p.asnumpy() + shift))
    policy.network.set_train(False)
    reference.set_train(False)
    return request.param, cfg.dpo, policy.network, reference


def by_hand(network, ids, labels):
    """(sum [2B], count [2B]): every position's logits, log-softmax in float64, the label's log-probability."""
    import mindspore as ms

    logits = network(ms.Tensor(ids))[0].asnumpy().astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    mask = labels != IGNORE
    picked = np.take_along_axis(logp, np.where(mask, labels, 0)[..., None], -1)[..., 0] * mask
    return picked.sum(1), mask.sum(1).astype(np.float64)


def loss_by_hand(cfg, policy, reference, weight):
    """The DPO loss and METRICS from per-row (sum, count) of the policy and the reference (None: zeros)."""
    average = cfg.loss in ("ipo", "simpo")
    b = len(weight)

    def seq(s, c):
        return s / np.maximum(c, 1.0) if average else s

    pi = seq(*policy)
    ref = seq(*reference) if reference is not None else np.zeros_like(pi)
    chosen, rejected = pi[:b] - ref[:b], pi[b:] - ref[b:]
    h = chosen - rejected

    def log_sigmoid(x):
        return -np.logaddexp(0.0, -x)

    if cfg.loss == "ipo":
        losses = (h - 1.0 / (2.0 * cfg.beta)) ** 2
    else:
        z = cfg.beta * h - cfg.gamma if cfg.loss == "simpo" else cfg.beta * h
        losses = -(1.0 - cfg.label_smoothing) * log_sigmoid(z) - cfg.label_smoothing * log_sigmoid(-z)

    def mean(x):
        return float((x * weight).sum() / max(weight.sum(), 1.0))

    sft = mean(-policy[0][:b] / np.maximum(policy[1][:b], 1.0))
    loss = mean(losses) + cfg.sft_coef * sft
    rc, rr = cfg.beta * chosen, cfg.beta * rejected
    metrics = (mean(rc), mean(rr), mean(rc - rr), mean((rc - rr > 0).astype(float)), mean(pi[:b]), mean(pi[b:]),
               mean((pi[:b] > pi[b:]).astype(float)), sft)
    return loss, metrics


LOSSES = {   # dpo settings per case: every loss type, with label smoothing and the SFT term somewhere
    "sigmoid": dict(loss="sigmoid", beta=0.5, sft_coef=0.0),
    "sigmoid_ls_sft": dict(loss="sigmoid", beta=0.3, label_smoothing=0.2, sft_coef=0.4),
    "ipo": dict(loss="ipo", beta=0.25, sft_coef=0.1),
    "simpo": dict(loss="simpo", beta=2.0, gamma=0.5, sft_coef=0.0),
}
# (budgets, expected K): planned from the batch (some padded entries), and a budget the batch exceeds
BUDGETS = {"planned": (None, None), "over_budget": ({L: 16}, 2 * PAIRS * L)}


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_row_sums_and_counts_equal_every_positions_logits(nets, budget):
    import mindspore as ms

    from mindtune.models.causal_lm import output_projection
    from mindtune.stages.dpo import pair_batch, pair_label_budgets, sequence_logps

    method, _, policy, reference = nets
    data = pairs_data(seed=2)
    idx = np.arange(2)
    budgets, k = BUDGETS[budget]
    if budgets is None:
        budgets = pair_label_budgets([(data, idx)], PAIRS)
        k = -(-int(data.label_counts.sum()) // 16) * 16
    ids, label_at, label_ids, weight, _ = pair_batch(data, idx, PAIRS, 0, budgets=budgets)
    assert label_at.shape == (k,) and weight.tolist() == [1, 1, 0]
    assert (label_ids == IGNORE).sum() == k - data.label_counts.sum() > 0     # padded entries: index 0, IGNORE
    labels = np.concatenate([data.chosen_labels, np.full((1, L), IGNORE), data.rejected_labels,
                             np.full((1, L), IGNORE)]).astype(np.int32)
    for network in (policy, reference):
        want_sum, want_count = by_hand(network, ids, labels)
        for average in (False, True):
            logps, total, count = (x.asnumpy() for x in sequence_logps(
                network, output_projection(network), ms.Tensor(ids), ms.Tensor(label_at), ms.Tensor(label_ids),
                average))
            np.testing.assert_allclose(count, want_count, rtol=0, atol=0, err_msg=method)
            np.testing.assert_allclose(total, want_sum, rtol=1e-5, atol=1e-5, err_msg=method)
            want = want_sum / np.maximum(want_count, 1.0) if average else want_sum
            np.testing.assert_allclose(logps, want, rtol=1e-5, atol=1e-5, err_msg=method)
    assert want_count[[2, 5]].tolist() == [0, 0] and (want_count[[0, 1, 3, 4]] > 0).all()   # fillers: no labels


@pytest.mark.parametrize("budget", sorted(BUDGETS))
@pytest.mark.parametrize("case", sorted(LOSSES))
def test_loss_and_metrics_equal_the_full_logit_computation(nets, case, budget):
    import mindspore as ms

    from mindtune.stages.dpo import DPOLoss, pair_batch, pair_label_budgets

    method, dpo, policy, reference = nets
    cfg = dataclasses.replace(dpo, **{"label_smoothing": 0.0, "gamma": 0.0, **LOSSES[case]})
    data = pairs_data(seed=3)
    idx = np.arange(2)
    budgets = BUDGETS[budget][0] or pair_label_budgets([(data, idx)], PAIRS)
    labels = np.concatenate([data.chosen_labels, np.full((1, L), IGNORE), data.rejected_labels,
                             np.full((1, L), IGNORE)]).astype(np.int32)
    pol = by_hand(policy, np.concatenate([data.chosen, np.zeros((1, L)), data.rejected, np.zeros((1, L))])
                  .astype(np.int32), labels)
    # in-graph reference (not for simpo), and the reference's numbers given as ref_logps (precomputed / simpo)
    for in_graph in ((True, False) if cfg.loss != "simpo" else (False,)):
        ref_hand = None
        if cfg.loss != "simpo":
            ref_hand = by_hand(reference, np.concatenate([data.chosen, np.zeros((1, L)), data.rejected,
                                                          np.zeros((1, L))]).astype(np.int32), labels)
        average = cfg.loss in ("ipo", "simpo")
        ref_seq = None if ref_hand is None else (ref_hand[0] / np.maximum(ref_hand[1], 1.0) if average
                                                 else ref_hand[0])
        ref_given = ref_seq if not in_graph and ref_seq is not None else None
        refs = None if ref_given is None else (ref_given[:2], ref_given[3:5])
        ids, label_at, label_ids, weight, ref_logps = pair_batch(data, idx, PAIRS, 0, refs, budgets)
        if budget == "over_budget":
            assert label_at.shape == (2 * PAIRS * L,)
        cell = DPOLoss(policy, reference if in_graph else None, cfg)
        loss, metrics = cell(*(ms.Tensor(x) for x in (ids, label_at, label_ids, weight, ref_logps)))
        want_loss, want_metrics = loss_by_hand(cfg, pol, ref_hand, weight)
        where = f"{method} {case} {budget} in_graph={in_graph}"
        assert float(loss.asnumpy()) == pytest.approx(want_loss, rel=1e-5, abs=1e-5), where
        got = [float(m.asnumpy()) for m in metrics]
        np.testing.assert_allclose(got, want_metrics, rtol=1e-5, atol=1e-5, err_msg=where)
        assert not math.isclose(want_metrics[2], 0.0, abs_tol=1e-3) or cfg.loss == "simpo", where   # a real margin


def test_label_budget_is_planned_from_the_train_and_eval_pair_batches():
    from mindtune.stages.dpo import pair_batch, planned_budgets

    train = pairs_data(seed=4, n=12, response=(2, 4))       # at most 2 * 3 labels a side
    held_out = pairs_data(seed=5, n=5, response=(8, 9))     # 8 labels a side: the eval batches hold the most
    sampler = SimpleNamespace(batch=4, world=1, first_batches=lambda count: [np.arange(4 * j, 4 * j + 4) % 12
                                                                             for j in range(count)])
    cfg = SimpleNamespace(train=SimpleNamespace(max_steps=3, grad_accum=1))
    most_train = max(int(train.label_counts[np.arange(4 * j, 4 * j + 4)].sum()) for j in range(3))
    assert planned_budgets(cfg, train, None, sampler) == {L: -(-most_train // 16) * 16}
    budgets = planned_budgets(cfg, train, held_out, sampler)
    assert budgets == {L: 64}                               # 4 pairs x 2 sides x 8 labels = 64
    assert pair_batch(held_out, np.arange(4), 4, 0, budgets=budgets)[1].shape == (64,)
    assert pair_batch(held_out, np.arange(4, 5), 4, 0, budgets=budgets)[1].shape == (64,)   # the last, padded


def test_cached_preference_label_counts_are_those_the_batches_hold(tmp_path):
    from mindtune.data.cache import CacheView, ensure_cache
    from mindtune.data.encoders import Encoding
    from mindtune.data.sets import Part, PreferenceSet
    from mindtune.data.sources import Source
    from mindtune.data.tokenizer import load_tokenizer

    tok = load_tokenizer(os.path.join(ASSETS, "tiny_tokenizer"))
    parts = []
    for name in ("rm_keyword_eval.jsonl", "demo_pref_train.jsonl"):   # two sources: a mixture's parts
        path = os.path.join(ASSETS, name)
        entry = ensure_cache(Source(path), tok, Encoding("preference", 40, "keep_response", False, 0), str(tmp_path))
        parts.append(Part(CacheView(entry.directory), path, name, 1.0, limit=7))
    data = PreferenceSet(parts, 0, 40)
    idx = np.arange(len(data))
    want = (data.chosen_labels[idx] != IGNORE).sum(1) + (data.rejected_labels[idx] != IGNORE).sum(1)
    assert len(data) == 14 and data.label_counts.tolist() == want.tolist() and want.min() > 0
