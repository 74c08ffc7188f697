"""Experiment, not a stage: fine-tune a target-stance model on whole PerSenT articles?

    python scripts/experiments/persent_mil.py [MODEL_DIR] [--folds 5] [--epochs 2]   # default models/target_stance

A model trained on NewsMTSC sentences reads an article window by window and averages the windows'
logits. Here that average is itself trained on the article's label (multiple-instance learning:
the loss is on the article, every window gets its gradient through the mean), starting from the
sentence model, on the PerSenT `dev` articles of k-1 folds, and scored on the held-out fold. The
transformer alone (no TF-IDF blend) is compared on the same folds with the offsets rule the
product uses (`train.article_bias_set`, fitted on the k-1 folds). Only `dev` is read.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from pipeline.io import read_table
from pipeline.metrics import fit_class_bias
from pipeline.modeling import Classifier, Windows, apply_article_bias, combine_windows, pad_batch, window_logits
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

SOURCE = Path("../shared/data/persent_dev_random_test.csv.gz")
LABELS = {"Positive": "favor", "Negative": "against", "Neutral": "neutral"}


def article_logits(model: torch.nn.Module, windows: Windows, articles: list[int], pad_id: int) -> torch.Tensor:
    """The mean window logits of each article in `articles` (their windows in one batch)."""
    wanted = set(articles)
    idx = [i for i, owner in enumerate(windows.owner) if owner in wanted]
    logits = model(**pad_batch(windows, idx, pad_id)).logits
    owner = torch.tensor([articles.index(windows.owner[i]) for i in idx])
    sums = torch.zeros(len(articles), logits.shape[1]).index_add(0, owner, logits.float())
    return sums / torch.bincount(owner, minlength=len(articles)).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=Path("models/target_stance"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--articles-per-step", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-folds", type=int, default=None, help="stop after this many folds; scores on their rows")
    parser.add_argument("--limit", type=int, default=None, help="the first N dev articles only (a smoke run)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    clf = Classifier.load(args.model, "auto", "fp32", 64)
    clf.tfidf, clf.blend, clf.article_bias, clf.class_bias = None, None, None, None  # the transformer alone
    rows = read_table(SOURCE, ["split", "TARGET_ENTITY", "DOCUMENT", "TRUE_SENTIMENT"])
    dev = rows[rows["split"] == "dev"].head(args.limit)
    texts = dev["DOCUMENT"].fillna("").str.strip().tolist()
    targets = dev["TARGET_ENTITY"].astype(str).tolist()
    y = np.array([clf.labels.index(LABELS[v]) for v in dev["TRUE_SENTIMENT"]])
    windows = clf.windows(texts, targets)
    n_windows = np.bincount(windows.owner, minlength=len(texts))
    pad_id = int(clf.tokenizer.pad_token_id or 0)
    start_state = copy.deepcopy(clf.model.state_dict())

    def article_probs() -> np.ndarray:  # the windows above, read by the model as it is now
        logits = window_logits(clf.model, windows, pad_id, clf.batch_size, clf.device, clf.precision)
        return combine_windows(logits, windows.owner, len(texts), "mean_logits")

    before = article_probs()
    print(f"{len(texts)} dev articles, {len(windows)} windows; labels {clf.labels}, counts {np.bincount(y).tolist()}")

    weights = torch.tensor(len(y) / (len(clf.labels) * np.bincount(y, minlength=len(clf.labels))), dtype=torch.float)
    predicted = {"sentence model": np.zeros(len(y), int), "+ offsets": np.zeros(len(y), int)}
    predicted |= {"article-trained": np.zeros(len(y), int), "article-trained + offsets": np.zeros(len(y), int)}
    started = time.time()
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(texts, y)
    seen = np.zeros(len(y), dtype=bool)
    for fold, (fit, held_out) in enumerate(folds):
        if fold == args.max_folds:
            break
        seen[held_out] = True
        predicted["sentence model"][held_out] = before[held_out].argmax(1)
        bias = list(fit_class_bias(before[fit], y[fit]))
        predicted["+ offsets"][held_out] = apply_article_bias(before[held_out], n_windows[held_out], bias).argmax(1)

        model = clf.model
        model.load_state_dict(start_state)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01, fused=True)
        steps = max(1, args.epochs * int(np.ceil(len(fit) / args.articles_per_step)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s, total=steps: max(0.0, 1 - s / total))
        rng = np.random.default_rng(args.seed + fold)
        for _epoch in range(args.epochs):
            order = rng.permutation(fit)
            for s in range(0, len(order), args.articles_per_step):
                batch = [int(i) for i in order[s : s + args.articles_per_step]]
                loss = torch.nn.functional.cross_entropy(
                    article_logits(model, windows, batch, pad_id), torch.tensor(y[batch]), weight=weights
                )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        model.eval()
        after = article_probs()
        predicted["article-trained"][held_out] = after[held_out].argmax(1)
        bias = list(fit_class_bias(after[fit], y[fit]))  # in-sample for the trained folds: for the record
        predicted["article-trained + offsets"][held_out] = apply_article_bias(
            after[held_out], n_windows[held_out], bias
        ).argmax(1)
        fold_f1 = f1_score(y[held_out], after[held_out].argmax(1), average="macro")
        print(f"fold {fold}: held-out macro-F1 {fold_f1:.4f} ({time.time() - started:.0f}s)", flush=True)
    for name, pred in predicted.items():
        per_class = f1_score(y[seen], pred[seen], average=None)
        macro = f1_score(y[seen], pred[seen], average="macro")
        print(
            f"{name:<28} dev {args.folds}-fold CV, {seen.sum()} held-out articles: macro-F1 {macro:.4f}  "
            f"per class {dict(zip(clf.labels, np.round(per_class, 3).tolist(), strict=True))}"
        )


if __name__ == "__main__":
    main()
