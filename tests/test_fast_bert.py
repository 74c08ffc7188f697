"""The training fast paths change no arithmetic: same logits, same gradients, same dropout law."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from pipeline.models.fast_bert import FirstTokenBertLayer, RandDropout, first_token_last_layer, rand_dropout
from pipeline.models.mean_pool import MeanPoolBertClassifier


def tiny_bert(attn: str, dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=0.0,
        attn_implementation=attn,
    )
    return BertForSequenceClassification(config)


def padded_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 20), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # rows of different lengths: the mask must reach the one remaining query
    mask[3, 5:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_first_token_last_layer_gives_the_same_logits_and_gradients(attn):
    plain = tiny_bert(attn)
    fast = copy.deepcopy(plain)
    assert first_token_last_layer(fast)
    assert isinstance(fast.bert.encoder.layer[-1], FirstTokenBertLayer)
    assert not isinstance(fast.bert.encoder.layer[0], FirstTokenBertLayer)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    batch, y = padded_batch(), torch.tensor([0, 1, 2, 1])
    for model in (plain, fast):
        model.train()  # dropout is 0: training mode, deterministic
        torch.nn.functional.cross_entropy(model(**batch).logits, y).backward()
    plain.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**batch).logits, plain(**batch).logits, rtol=1e-5, atol=1e-6)
    grads = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        if grads[name].grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_first_token_last_layer_leaves_other_models_alone():
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    mean_pooled = MeanPoolBertClassifier(config)  # reads every position of the last layer
    assert not first_token_last_layer(mean_pooled)
    assert not any(isinstance(layer, FirstTokenBertLayer) for layer in mean_pooled.bert.encoder.layer)


def test_rand_dropout_keeps_the_law_of_nn_dropout():
    torch.manual_seed(0)
    drop = RandDropout(0.1)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / 0.9))
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept.float() / 0.9)  # the gradient flows through the kept units only
    drop.eval()
    assert drop(x) is x


def test_rand_dropout_swaps_every_dropout_and_no_weight():
    model = tiny_bert("sdpa", dropout=0.1)
    keys = model.state_dict().keys()
    rates = sorted(m.p for m in model.modules() if type(m) is torch.nn.Dropout)
    assert rand_dropout(model) == len(rates) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert sorted(m.p for m in model.modules() if isinstance(m, RandDropout)) == rates
    assert model.state_dict().keys() == keys
    model.eval()  # at inference both are the identity: the same logits as before the swap
    plain = tiny_bert("sdpa", dropout=0.1).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**padded_batch()).logits, plain(**padded_batch()).logits)
