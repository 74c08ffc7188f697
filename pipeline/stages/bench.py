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
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import label_indices
from pipeline.core.metrics import compute_metrics
from pipeline.models.loading import load_model, load_torch
from pipeline.models.onnx_backend import OnnxBackend
from pipeline.models.predictor import Predictor
from pipeline.models.runtime import load_tokenizer, pick_device, quiet_transformers, set_threads
from pipeline.models.torch_backend import TorchBackend, build_classifier
from pipeline.stages.evaluate import prepared_test_data
from pipeline.stages.prepare import prepare
from pipeline.stages.train import train
from pipeline.stages.train_data import training_windows
from pipeline.tracking.registry import CHAMPION, resolve_model


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


@dataclass
class PredictBench:
    model_uri: str
    n: int
    device: str
    runs: list[Measured]  # plain pipeline batch 1, batch 16, ours, (the torch reference)
    label_agreement_with_torch: float
    transformer_read_share: float  # share of articles the transformer read (the rest: TF-IDF alone)

    def summary(self) -> dict[str, Any]:
        """The `--json` object: the three speeds, their ratios and macro-F1s."""
        a, b, c = self.runs[:3]
        return {
            "baseline_bs1_articles_per_s": a.articles_per_s,
            "baseline_bs16_articles_per_s": b.articles_per_s,
            "articles_per_s": c.articles_per_s,
            "speedup_vs_bs1": c.articles_per_s / a.articles_per_s,
            "speedup_vs_bs16": c.articles_per_s / b.articles_per_s,
            "macro_f1": {"baseline_bs1": a.macro_f1, "baseline_bs16": b.macro_f1, "ours": c.macro_f1},
            "transformer_read_share": self.transformer_read_share,
        }


def plain_pipeline(
    folder: Path, torch_model: Predictor, texts: list[str], pairs: list[str] | None, device: Any
) -> Callable[[int], Callable[[], tuple[np.ndarray, int]]]:
    """`transformers.pipeline("text-classification")` over the model folder, truncating at the model's
    whole window, as a user writes it first; returns a runner for a batch size (warmed up)."""
    backend = torch_model.backend
    if not isinstance(backend, TorchBackend):
        raise PipelineError("the plain transformers pipeline needs the PyTorch classifier")
    labels = torch_model.labels
    plain_window = min(int(backend.tokenizer.model_max_length), int(backend.model.config.max_position_embeddings))
    quiet_transformers()
    from transformers import pipeline

    classify = pipeline(
        "text-classification",
        model=str(folder),
        tokenizer=str(folder),
        device=device,
        trust_remote_code=False,
        model_kwargs={"use_safetensors": True},
    )
    inputs: list[Any] = (
        [{"text": p, "text_pair": t} for p, t in zip(pairs, texts, strict=True)] if pairs is not None else texts
    )
    encoded = backend.tokenizer(*((pairs, texts) if pairs else (texts,)), truncation=True, max_length=plain_window)
    truncated_tokens = sum(len(ids) for ids in encoded["input_ids"])
    classify(inputs[:2], batch_size=2, truncation=True, max_length=plain_window)  # first-call costs not counted

    def runner(batch_size: int) -> Callable[[], tuple[np.ndarray, int]]:
        def run() -> tuple[np.ndarray, int]:
            out = classify(inputs, batch_size=batch_size, truncation=True, max_length=plain_window, top_k=None)
            probs = np.zeros((len(inputs), len(labels)))
            for row, scores in enumerate(out):
                for scored in scores:  # top_k=None: every label with its score
                    probs[row, labels.index(scored["label"])] = scored["score"]  # type: ignore[index]
            return probs, truncated_tokens

        return run

    return runner


def bench_predict(cfg: Config, model_ref: str | None = None, limit: int | None = None) -> PredictBench:
    """(a), (b) and (c) on the prepared test split (its first `limit` articles)."""
    r = cfg.runtime
    set_threads(r.threads)
    data = prepared_test_data(cfg)
    texts, pairs = data.texts[:limit], data.pairs[:limit] if data.pairs is not None else None
    folder, uri = resolve_model(model_ref or f"models:/{cfg.mlflow.registered_model}@{CHAMPION}")
    # the reference: the PyTorch model with every article through the transformer, as training scores it
    reference = load_torch(folder, r.device, r.precision, r.eval_batch_size)
    if reference.card.pooling == "mean_mention":  # its head is twice as wide as the one the plain pipeline builds
        raise PipelineError("the plain transformers pipeline cannot run a model with pooling 'mean_mention'")
    labels, y = reference.labels, label_indices(data.labels[: len(texts)], reference.labels)
    device = pick_device(r.device)
    plain = plain_pipeline(folder, reference, texts, pairs, device)
    windows = reference.backend.windows(texts, pairs)
    # what `pipeline predict` runs: the ONNX export when the folder has one, else PyTorch
    fast = load_model(folder, r.device, r.precision, r.eval_batch_size, r.threads)
    threshold, reference.decision.tfidf_first = reference.decision.tfidf_first, None
    read = set(fast.decision.route(texts, pairs).rows.tolist())
    read_tokens = sum(len(ids) for ids, owner in zip(windows.input_ids, windows.owner, strict=True) if owner in read)
    window_tokens = sum(len(ids) for ids in windows.input_ids)
    reference.predict_proba(texts[:2], pairs[:2] if pairs else None)  # warm-up calls
    fast.predict_proba(texts[:2], pairs[:2] if pairs else None)
    a = measure("transformers pipeline, batch 1", plain(1), y, labels)
    b = measure("transformers pipeline, batch 16", plain(16), y, labels)
    precision = reference.backend.precision if isinstance(reference.backend, TorchBackend) else ""
    backend = f"onnx {fast.card.onnx}" if isinstance(fast.backend, OnnxBackend) else f"torch {precision}"
    w = reference.card.windows
    reads = f"≤{w.max_windows} windows of {w.max_length} tokens" + (" + TF-IDF" if fast.decision.tfidf else "")
    first = f", TF-IDF alone where p ≥ {threshold}" if threshold is not None else ""
    ours = lambda: (fast.predict_proba(texts, pairs), read_tokens)  # noqa: E731
    c = measure(f"pipeline predict ({backend}, {reads}{first})", ours, y, labels)
    runs = [a, b, c]
    if fast.card.onnx or threshold is not None:  # the reference too, for the record
        torch_run = lambda: (reference.predict_proba(texts, pairs), window_tokens)  # noqa: E731
        runs.append(measure(f"every article through torch {precision}, {reads}", torch_run, y, labels))
    same = fast.predict_proba(texts, pairs).argmax(1) == reference.predict_proba(texts, pairs).argmax(1)
    return PredictBench(uri, len(texts), str(device), runs, float(same.mean()), len(read) / max(len(texts), 1))


@dataclass
class TrainBench:
    steps: int
    batch_size: int
    windows: int
    ours_steps_per_s: float
    trainer_steps_per_s: float
    speedup: float
    trainer_optim: str
    trainer_precision: str
    fast_paths: bool


def bench_train(cfg: Config, steps: int) -> TrainBench:
    """Optimizer steps per second of our training loop and of a `transformers.Trainer` with default
    arguments, on the same training windows, the same model and the same batch size."""
    import tempfile

    from datasets import Dataset, load_from_disk
    from transformers import PrinterCallback, Trainer, TrainingArguments

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
    return TrainBench(
        steps,
        cfg.train.batch_size,
        len(windows),
        ours.steps_per_second,
        trainer_rate,
        ours.steps_per_second / trainer_rate,
        str(args.optim),
        "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        cfg.train.fast_paths,
    )
