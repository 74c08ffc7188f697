"""Benchmark stage: our predict path against the plain transformers pipeline, side by side in one process.

On the task's prepared test articles, with the same fine-tuned model:
(a) `transformers.pipeline("text-classification")`, batch size 1, truncated at the model's window (512):
    what a user writes first; (b) the same with batch size 16; (c) our predict path (length-sorted
    dynamic-padded batches of every window, inference mode, bf16 where the CPU has bf16 instructions).
Each gives articles/s, tokens/s (tokens the model actually read), peak resident memory while it
ran, and macro-F1; then the ratios c/a and c/b.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Config
from pipeline.errors import PipelineError


@dataclass
class Measured:
    name: str
    articles_per_s: float
    tokens_per_s: float
    peak_rss_mb: float
    macro_f1: float
    seconds: float


@contextmanager
def peak_rss() -> Any:
    """Samples this process's resident memory every 20 ms; yields a dict whose `mb` is the peak."""
    import psutil

    process, peak, stop = psutil.Process(), {"mb": 0.0}, threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["mb"] = max(peak["mb"], process.memory_info().rss / 2**20)
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def measure(name: str, run: Callable[[], tuple[np.ndarray, int]], y: np.ndarray, labels: list[str]) -> Measured:
    """Time `run()` (which returns class probabilities and the number of tokens read)."""
    from pipeline.metrics import compute_metrics

    with peak_rss() as peak:
        start = time.perf_counter()
        probs, tokens = run()
        seconds = time.perf_counter() - start
    return Measured(
        name,
        len(y) / seconds,
        tokens / seconds,
        peak["mb"],
        compute_metrics(y, probs, labels)["macro_f1"],
        seconds,
    )


def bench_predict(cfg: Config, model_ref: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """(a), (b) and (c) on the prepared test split (its first `limit` articles)."""
    from pipeline import tracking
    from pipeline.evaluate import label_indices, prepared_test_data
    from pipeline.modeling import Classifier, _quiet_transformers, pick_device, set_threads

    set_threads(cfg.runtime.threads)
    data = prepared_test_data(cfg)
    texts, pairs = data.texts[:limit], data.pairs[:limit] if data.pairs is not None else None
    folder, uri = tracking.resolve_model(model_ref or f"models:/{cfg.mlflow.registered_model}@{tracking.CHAMPION}")
    clf = Classifier.load(folder, cfg.runtime.device, cfg.runtime.precision, cfg.runtime.eval_batch_size)
    if clf.pooling == "mean_mention":  # its head is twice as wide as the one the plain pipeline builds
        raise PipelineError("the plain transformers pipeline cannot run a model with pooling 'mean_mention'")
    labels = clf.labels
    y = label_indices(data.labels[: len(texts)], labels)
    # what a plain pipeline truncates at: the model's whole window, not the (shorter) one we may read
    plain_window = min(int(clf.tokenizer.model_max_length), int(clf.model.config.max_position_embeddings))

    _quiet_transformers()
    from transformers import pipeline

    device = pick_device(cfg.runtime.device)
    classify = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=device)
    inputs: list[Any] = (
        [{"text": p, "text_pair": t} for p, t in zip(pairs, texts, strict=True)] if pairs is not None else texts
    )
    truncated_tokens = sum(
        len(ids)
        for ids in clf.tokenizer(*((pairs, texts) if pairs else (texts,)), truncation=True, max_length=plain_window)[
            "input_ids"
        ]
    )

    def plain(batch_size: int) -> Callable[[], tuple[np.ndarray, int]]:
        def run() -> tuple[np.ndarray, int]:
            out = classify(inputs, batch_size=batch_size, truncation=True, max_length=plain_window, top_k=None)
            probs = np.zeros((len(inputs), len(labels)))
            for row, scores in enumerate(out):
                for scored in scores:  # top_k=None: every label with its score
                    probs[row, labels.index(scored["label"])] = scored["score"]  # type: ignore[index]
            return probs, truncated_tokens

        return run

    from pipeline.modeling import load_model

    windows = clf.windows(texts, pairs)
    window_tokens = sum(len(ids) for ids in windows.input_ids)
    # what `pipeline predict` runs: the ONNX export when the folder has one, else PyTorch
    fast = load_model(
        folder, cfg.runtime.device, cfg.runtime.precision, cfg.runtime.eval_batch_size, cfg.runtime.threads
    )
    # the reference: the fp32 PyTorch model with every article through the transformer, as training scores it
    threshold, clf.tfidf_first = clf.tfidf_first, None
    transformer_read = np.ones(len(texts), dtype=bool)
    if clf.tfidf is not None and threshold is not None:
        from pipeline.tfidf import tfidf_texts

        transformer_read = np.exp(clf.tfidf.log_proba(tfidf_texts(texts, pairs))).max(axis=1) < threshold
    read_tokens = sum(
        len(ids) for ids, owner in zip(windows.input_ids, windows.owner, strict=True) if transformer_read[owner]
    )

    def ours() -> tuple[np.ndarray, int]:
        return fast.predict_proba(texts, pairs), read_tokens

    def torch_path() -> tuple[np.ndarray, int]:
        return clf.predict_proba(texts, pairs), window_tokens

    # a warm-up call each, so that first-call costs are not counted against either side
    classify(inputs[:2], batch_size=2, truncation=True, max_length=plain_window)
    clf.predict_proba(texts[:2], pairs[:2] if pairs else None)
    fast.predict_proba(texts[:2], pairs[:2] if pairs else None)
    a = measure("transformers pipeline, batch 1", plain(1), y, labels)
    b = measure("transformers pipeline, batch 16", plain(16), y, labels)
    backend = f"onnx {fast.meta['onnx']}" if fast is not clf and fast.meta.get("onnx") else f"torch {clf.precision}"
    reads = f"≤{clf.max_windows} windows of {clf.max_length} tokens" + (" + TF-IDF" if clf.tfidf else "")
    first = f", TF-IDF alone where p ≥ {threshold}" if threshold is not None else ""
    c = measure(f"pipeline predict ({backend}, {reads}{first})", ours, y, labels)
    runs = [a, b, c]
    if fast.meta.get("onnx") or threshold is not None:  # the reference too, for the record
        runs.append(measure(f"every article through torch {clf.precision}, {reads}", torch_path, y, labels))
    agreement = float((fast.predict_proba(texts, pairs).argmax(1) == clf.predict_proba(texts, pairs).argmax(1)).mean())
    return {
        "model_uri": uri,
        "n": len(texts),
        "device": str(device),
        "runs": runs,
        "label_agreement_with_torch": agreement,
        "transformer_read_share": float(transformer_read.mean()),
        "baseline_bs1_articles_per_s": a.articles_per_s,
        "baseline_bs16_articles_per_s": b.articles_per_s,
        "articles_per_s": c.articles_per_s,
        "speedup_vs_bs1": c.articles_per_s / a.articles_per_s,
        "speedup_vs_bs16": c.articles_per_s / b.articles_per_s,
        "macro_f1": {"baseline_bs1": a.macro_f1, "baseline_bs16": b.macro_f1, "ours": c.macro_f1},
    }


def bench_train(cfg: Config, steps: int) -> dict[str, Any]:
    """Optimizer steps per second of our training loop and of a `transformers.Trainer` with default
    arguments, on the same training windows, the same model and the same batch size."""
    import tempfile
    from pathlib import Path

    from datasets import Dataset, load_from_disk
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from pipeline.data import prepare
    from pipeline.modeling import build_classifier, load_tokenizer, pick_device, set_threads
    from pipeline.train import train, training_windows

    tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    ours_cfg = cfg.model_copy(deep=True)
    ours_cfg.train.max_steps, ours_cfg.train.output_dir = steps, str(tmp / "ours")
    ours_cfg.data.extra_tests, ours_cfg.mlflow.experiment = [], f"{cfg.mlflow.experiment}-bench"
    ours = train(ours_cfg, register=False, show_progress=False)

    prepared = prepare(cfg)
    split = load_from_disk(str(prepared.path))["train"]
    labels: list[str] = prepared.card["labels"]
    tokenizer = load_tokenizer(cfg.model.name)
    pairs = list(split["pair"]) if "pair" in split.column_names else None
    windows, y = training_windows(cfg, tokenizer, list(split["text"]), pairs, np.asarray(split["label"]))
    data = Dataset.from_dict(
        {"input_ids": windows.input_ids, "token_type_ids": windows.token_type_ids, "labels": y.tolist()}
    )
    set_threads(cfg.runtime.threads)
    model = build_classifier(cfg.model.name, labels, cfg.model.attention_dropout, "cls")
    args = TrainingArguments(  # defaults, but for what makes the two runs the same work
        output_dir=str(tmp / "trainer"),
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.learning_rate,
        max_steps=steps,
        seed=cfg.train.seed,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=pick_device(cfg.runtime.device).type == "cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # it prints its log dict to stdout, into --json's output
    start = time.perf_counter()
    trainer.train()
    trainer_rate = steps / (time.perf_counter() - start)
    return {
        "steps": steps,
        "batch_size": cfg.train.batch_size,
        "windows": len(windows),
        "ours_steps_per_s": ours.steps_per_second,
        "trainer_steps_per_s": trainer_rate,
        "speedup": ours.steps_per_second / trainer_rate,
        "trainer_optim": str(args.optim),
        "trainer_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "fast_paths": cfg.train.fast_paths,
    }
