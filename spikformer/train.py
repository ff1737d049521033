"""Training loop: AdamW, cross-entropy, cosine learning-rate schedule with a short warm-up, test accuracy after
every epoch. Seeded: on one device and thread count the same arguments give the same weights.

The model's forward resets every neuron state (as the official loop does with functional.reset_net after each
batch), so batches and samples never leak state into each other.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ground.errors import UserError

from .data import load_dataset_with_info
from .model import Spikformer, count_parameters
from .presets import SpikformerConfig
from .zoo import build_model

DEFAULT_EPOCHS = 20
DEFAULT_LR = 2e-3
DEFAULT_BATCH_SIZE = 64
WEIGHT_DECAY = 0.01
WARMUP_EPOCHS = 1


@dataclass
class TrainResult:
    model: Spikformer
    config: SpikformerConfig
    test_accuracy: float
    history: list[dict] = field(default_factory=list)
    data_info: dict = field(default_factory=dict)
    seconds: float = 0.0
    num_parameters: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads() -> int:
    """Use every CPU this process may run on (torch's default can exceed the cgroup/affinity share)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    n = max(1, n)
    torch.set_num_threads(n)
    return n


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> torch.device:
    device = device or default_device()
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was requested but no CUDA GPU is available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] (model put in eval mode)."""
    if len(y) == 0:
        return float("nan")
    correct, n = evaluate_batches(model, ((x[i:i + batch_size], y[i:i + batch_size])
                                          for i in range(0, len(y), batch_size)))
    return correct / n


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches) -> tuple[int, int]:
    """(correct, samples) of the model (put in eval mode) over (x, y) batches, e.g. a streaming loader."""
    model.eval()
    dev = next(model.parameters()).device
    correct = n = 0
    for xb, yb in batches:
        logits = model(xb.to(dev))
        correct += int((logits.argmax(1).cpu() == yb).sum())
        n += len(yb)
    return correct, n


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return f


class _TensorBatches:
    """Training batches of tensors in memory: one seeded permutation per epoch (the digits' byte-identical path)."""

    def __init__(self, split, seed: int, dev):
        x_tr, y_tr, self.x_te, self.y_te = split
        self.n = len(y_tr)
        self.gen = torch.Generator().manual_seed(seed)
        self.x, self.y, self.dev = x_tr.to(dev), y_tr.to(dev), dev

    def epoch(self, epoch: int, batch_size: int):
        perm = torch.randperm(self.n, generator=self.gen).to(self.dev)
        for i in range(0, self.n, batch_size):
            idx = perm[i:i + batch_size]
            yield self.x[idx], self.y[idx]

    def test_accuracy(self, model) -> float:
        return evaluate(model, self.x_te, self.y_te)


class _StreamedBatches:
    """Training batches read by make_loader's workers (spikformer.datasets), shuffled with a seed per epoch; the
    test split streamed the same way. With `track_max` (event data), the largest input value (count) of both
    splits, taken on their first pass: later epochs read the same samples."""

    def __init__(self, train_set, test_set, seed: int, workers: int, batch_size: int, track_max: bool):
        self.train_set, self.test_set, self.seed, self.workers = train_set, test_set, seed, workers
        self.n = len(train_set)
        self.eval_batch = max(batch_size, 64)
        self.max_value = 0.0
        self.unseen = {"train", "test"} if track_max else set()

    def _seen(self, split: str, batches):
        if split not in self.unseen:
            yield from batches
            return
        for xb, yb in batches:
            if xb.numel():
                self.max_value = max(self.max_value, float(xb.max()))
            yield xb, yb
        self.unseen.discard(split)

    def epoch(self, epoch: int, batch_size: int):
        from .datasets import make_loader
        yield from self._seen("train", make_loader(self.train_set, batch_size, self.workers, shuffle=True,
                                                   seed=self.seed * 100003 + epoch))

    def test_accuracy(self, model) -> float:
        from .datasets import make_loader
        if len(self.test_set) == 0:
            return float("nan")
        correct, n = evaluate_batches(model, self._seen("test", make_loader(self.test_set, self.eval_batch,
                                                                            self.workers)))
        return correct / n if n else float("nan")


def train(config: SpikformerConfig, data_spec: str, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
          batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, device: str | None = None, progress: bool = True,
          data=None, log=print, data_config=None, datasets=None, workers: int = 2) -> TrainResult:
    """Train a Spikformer of `config` on `data_spec` (see spikformer.data). `data` may pass an already loaded
    (split, info) pair of tensors; `datasets` instead a (train, test) pair of streaming data sets
    (spikformer.datasets.open_dataset), read by `workers` loader processes. `data_config`
    (spikformer.data_config.DataConfig): the input normalisation the model applies to the raw [0, 1] data (None:
    none). Returns the trained model (eval mode) with its final test accuracy and per-epoch history."""
    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"learning rate must be a positive number, got {lr}")
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    if datasets is not None:
        info = {}
        source = _StreamedBatches(datasets[0], datasets[1], seed, workers, batch_size, config.event_input)
    else:
        split, info = data if data is not None else load_dataset_with_info(
            data_spec, config.img_size, config.in_channels, seed=seed, num_classes=config.num_classes, T=config.T)
        source = None
    n_train = source.n if source is not None else len(split[1])
    if n_train == 0:
        raise UserError(f"data spec {data_spec!r} has no training samples")

    seed_everything(seed)
    model = build_model(config)
    model.set_input_normalization(data_config)
    model = model.to(dev)
    if source is None:  # after the model's initialisation, which draws from the global generator
        source = _TensorBatches(split, seed, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(n_train / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(epochs * steps_per_epoch, min(WARMUP_EPOCHS * steps_per_epoch,
                                                      (epochs * steps_per_epoch) // 4 or 1)))
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict] = []
    t0 = time.perf_counter()
    acc = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", leave=True, dynamic_ncols=True)
        for xb, yb in source.epoch(epoch, batch_size):
            xb, yb = xb.to(dev), yb.to(dev)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = len(yb)
            tot_loss += float(loss.detach()) * n
            tot_correct += int((logits.detach().argmax(1) == yb).sum())
            seen += n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.3f}")
        acc = source.test_accuracy(model)
        rec = {"epoch": epoch, "train_loss": tot_loss / seen, "train_accuracy": tot_correct / seen,
               "test_accuracy": acc, "seconds": time.perf_counter() - t0}
        history.append(rec)
        if bar is not None:
            bar.set_postfix(loss=f"{rec['train_loss']:.4f}", acc=f"{rec['train_accuracy']:.3f}",
                            test_acc=f"{acc:.4f}")
            bar.close()
        elif log is not None:
            log(f"epoch {epoch}/{epochs}: loss {rec['train_loss']:.4f} train acc {rec['train_accuracy']:.4f} "
                f"test acc {acc:.4f} ({rec['seconds']:.1f} s)")
    if isinstance(source, _StreamedBatches):
        info = {"max_value": source.max_value}
    model.eval()
    return TrainResult(model=model, config=config, test_accuracy=acc, history=history, data_info=info,
                       seconds=time.perf_counter() - t0, num_parameters=count_parameters(model))
