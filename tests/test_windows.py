"""Long-article windows: coverage of every token, pairs in every window, the cap, the combinations."""

import numpy as np
import pytest

from pipeline.core.errors import PipelineError
from pipeline.models.decision import combine_windows, softmax
from pipeline.models.runtime import load_tokenizer
from pipeline.text.windows import WindowSettings, mark_mentions
from pipeline.text.windows import encode_windows as encode_with_settings


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def encode_windows(tokenizer, texts, pairs, max_length, stride, max_windows, **flags):
    settings = WindowSettings(max_length=max_length, stride=stride, max_windows=max_windows, **flags)
    return encode_with_settings(tokenizer, texts, pairs, settings)


def article_tokens(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_windows_cover_every_token_in_order(tokenizer):
    text = " ".join(f"word{i}" for i in range(400))
    max_length, stride = 64, 16
    w = encode_windows(tokenizer, [text], None, max_length, stride, max_windows=100)
    body = max_length - 2
    rebuilt = []
    for i, ids in enumerate(w.input_ids):
        assert len(ids) <= max_length
        content = ids[1:-1]  # drop [CLS] and [SEP]
        rebuilt += content if i == 0 else content[stride:]
        assert len(content) <= body
    assert rebuilt == article_tokens(tokenizer, text)


def test_short_article_is_one_window(tokenizer):
    w = encode_windows(tokenizer, ["a short article", "another one"], None, 64, 16, 8)
    assert w.owner == [0, 1]


def test_max_windows_keeps_the_start(tokenizer):
    text = " ".join(f"word{i}" for i in range(400))
    full = encode_windows(tokenizer, [text], None, 64, 16, 100)
    capped = encode_windows(tokenizer, [text], None, 64, 16, 3)
    assert len(capped) == 3
    assert capped.input_ids == full.input_ids[:3]


def test_pair_is_in_every_window(tokenizer):
    claim = "the minister resigned"
    text = " ".join(f"word{i}" for i in range(300))
    w = encode_windows(tokenizer, [text], [claim], 64, 16, 100)
    claim_ids = article_tokens(tokenizer, claim)
    assert len(w) > 1
    for ids, types in zip(w.input_ids, w.token_type_ids, strict=True):
        assert ids[1 : 1 + len(claim_ids)] == claim_ids
        assert types[1] == 0 and types[-1] == 1


def test_a_long_pair_is_cut_and_the_text_still_read(tokenizer):
    # a claim longer than the window minus the stride made the tokenizer panic (no Python error)
    claim = " ".join(f"claim{i}" for i in range(120))
    text = " ".join(f"word{i}" for i in range(300))
    max_length, stride = 64, 16
    w = encode_windows(tokenizer, [text, "short"], [claim, claim], max_length, stride, 100)
    assert set(w.owner) == {0, 1} and len(w) > 2
    kept = max_length - 3 - stride - 1  # [CLS] claim [SEP] text [SEP]: more than `stride` left for the text
    claim_ids = article_tokens(tokenizer, claim)
    for ids, types, owner in zip(w.input_ids, w.token_type_ids, w.owner, strict=True):
        assert len(ids) <= max_length
        assert ids[1 : 1 + kept] == claim_ids[:kept] and ids[1 + kept] == tokenizer.sep_token_id
        if owner == 0:
            assert sum(types) > stride  # the text's tokens (and its [SEP])


def test_a_pair_that_fits_is_left_whole(tokenizer):
    claim = "the minister resigned over the budget"
    w = encode_windows(tokenizer, ["some text"], [claim], 64, 16, 8)
    assert tokenizer.decode(w.input_ids[0], skip_special_tokens=True) == f"{claim} some text"


def test_stride_must_leave_room(tokenizer):
    with pytest.raises(PipelineError, match="stride"):
        encode_windows(tokenizer, ["x"], None, 64, 32, 4)


def test_combinations_agree_on_a_single_window():
    logits = np.array([[2.0, 0.5, -1.0]])
    for how in ("mean_logits", "max_logits", "mean_probs", "first"):
        np.testing.assert_allclose(combine_windows(logits, [0], 1, how)[0], softmax(logits[0]), rtol=1e-6)


def test_combinations_are_distributions_and_use_their_windows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4)).astype(np.float32)
    owner = [0, 0, 0, 1, 2, 2, 2]
    for how in ("mean_logits", "max_logits", "mean_probs", "first"):
        probs = combine_windows(logits, owner, 3, how)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(combine_windows(logits, owner, 3, "mean_logits")[1], softmax(logits[3]), rtol=1e-6)
    np.testing.assert_allclose(combine_windows(logits, owner, 3, "first")[2], softmax(logits[4]), rtol=1e-6)
    np.testing.assert_allclose(
        combine_windows(logits, owner, 3, "mean_probs")[0], softmax(logits[:3]).mean(axis=0), rtol=1e-6
    )


def test_length_batches_cover_every_window_once_within_both_limits():
    import random

    from pipeline.text.windows import length_batches

    lengths = [random.Random(i).randint(3, 512) for i in range(200)]
    batches = length_batches(lengths, 32, 2048)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) <= 32 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 2048)
        assert lengths[b[0]] == max(lengths[i] for i in b)
    assert max(len(b) for b in length_batches([10] * 100, 32, None)) == 32


def test_mentions_of_the_target_are_marked_whole_words_only():
    assert mark_mentions("Turkey says turkey is ready; Turkeys eat.", "Turkey") == (
        "<< Turkey >> says << turkey >> is ready; Turkeys eat."
    )
    assert mark_mentions("no mention here", "NATO") == "no mention here"
    assert mark_mentions("a (U.S.) deal", "U.S.") == "a (<< U.S. >>) deal"
    assert mark_mentions("unchanged", "  ") == "unchanged"


def test_mention_mask_is_the_targets_mentions_in_each_window_else_the_target(tokenizer):
    text = "Turkey met Greece. " + " ".join(f"filler{i}" for i in range(60)) + " Later, turkey's envoy left."
    w = encode_windows(tokenizer, [text, "Nobody named."], ["Turkey", "Turkey"], 48, 8, 100, mention_pool=True)
    assert w.mention is not None and len(w.mention) == len(w) > 3
    pair_len = len(tokenizer("Turkey", add_special_tokens=False)["input_ids"])
    picked = [
        tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        for ids, mask in zip(w.input_ids, w.mention, strict=True)
    ]
    assert picked[0] == "turkey" and picked[w.owner.index(0) + w.owner.count(0) - 1] == "turkey"
    for ids, mask, article in zip(w.input_ids, w.mention, w.owner, strict=True):
        assert len(mask) == len(ids)
        if article == 1 or sum(mask) != 1:  # no mention in the window: the target's own tokens
            assert mask == [0] + [1] * pair_len + [0] * (len(ids) - pair_len - 1)
    # "Turkeys" is another word, not a mention; the plain windows are unchanged
    [other_word] = encode_windows(tokenizer, ["Turkeys fly."], ["Turkey"], 48, 8, 4, mention_pool=True).mention
    assert other_word == [0] + [1] * pair_len + [0] * (len(other_word) - pair_len - 1)
    assert encode_windows(tokenizer, [text], ["Turkey"], 48, 8, 100).input_ids == w.input_ids[: w.owner.count(0)]
    assert encode_windows(tokenizer, [text], ["Turkey"], 48, 8, 100).mention is None
    with pytest.raises(PipelineError, match="needs a pair column"):
        encode_windows(tokenizer, [text], None, 48, 8, 4, mention_pool=True)


def test_training_windows_follow_train_settings_else_the_models(tokenizer):
    from pathlib import Path

    from pipeline.core.config import load_config
    from pipeline.stages.train_data import training_windows

    root = Path(__file__).resolve().parents[1]
    text = " ".join(f"word{i}" for i in range(700))
    y = np.asarray([3])
    lede = ["model.max_length=128", "model.stride=32", "model.max_windows=1"]
    cfg = load_config(
        root / "configs" / "topic.yaml", [*lede, "train.max_length=512", "train.stride=128", "train.max_windows=4"]
    )
    windows, labels = training_windows(cfg, tokenizer, [text], ["a title"], y)
    assert len(windows) > 1 and max(len(ids) for ids in windows.input_ids) == 512
    assert labels.tolist() == [3] * len(windows)
    assert windows.input_ids == encode_windows(tokenizer, [text], ["a title"], 512, 128, 4).input_ids
    same = load_config(root / "configs" / "topic.yaml", lede)  # train.*: null, so the model's windows
    windows, _ = training_windows(same, tokenizer, [text], ["a title"], y)
    assert windows.input_ids == encode_windows(tokenizer, [text], ["a title"], 128, 32, 1).input_ids
    with pytest.raises(PipelineError, match=r"train\.stride"):
        load_config(root / "configs" / "topic.yaml", ["train.max_length=512", "train.stride=300"])
