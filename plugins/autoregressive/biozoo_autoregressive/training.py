"""Training a next_token model on tokenized cells: AdamW, length-sorted shuffled batches, best-validation weights.

Kept small on purpose (no Lightning): enough to train demo models reproducibly on a CPU and to
time a training step against the reference module.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from biozoo.errors import InvalidArgumentError
from biozoo.nn.precision import OptimizerStep, param_dtype, training_precision
from biozoo.singlecell.checks import check_training, refuse_non_finite
from biozoo.singlecell.tokenize import TokenizedCells
from biozoo_autoregressive.cells import CellContract, tokens_to_batch


@dataclass
class TrainReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def _batches(cells: TokenizedCells, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length (little padding); shuffled batch order when ``rng`` is given."""
    order = np.argsort(cells.lengths, kind="stable")
    groups = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    return groups


def _loss(model: torch.nn.Module, cells: TokenizedCells, idx: np.ndarray, contract: CellContract) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: torch.from_numpy(v).to(device) for k, v in tokens_to_batch(cells, idx, contract).items()}
    inputs.pop("values")
    return model(**inputs, labels=inputs["input_ids"]).loss  # float32 whatever the weights (see model.py)


def evaluate(model: torch.nn.Module, cells: TokenizedCells, contract: CellContract, batch_size: int = 64) -> float:
    """Mean next-token loss per batch (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        losses = [float(_loss(model, cells, idx, contract)) for idx in _batches(cells, batch_size, None)]
    return float(np.mean(losses))


def train(
    model: torch.nn.Module,
    train_cells: TokenizedCells,
    val_cells: TokenizedCells,
    contract: CellContract,
    *,
    epochs: int = 30,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    batch_size: int = 32,
    patience: int = 5,
    seed: int = 0,
    log: bool = True,
    dtype: str | torch.dtype | None = None,
) -> TrainReport:
    """Train with AdamW and a cosine schedule; keeps the weights of the best validation epoch.

    ``model``'s weights must be float32 (master weights); ``dtype`` bfloat16 or float16 trains with
    mixed precision (autocast forward passes, a gradient scaler for float16).
    """
    check_training(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience)
    if param_dtype(model) != torch.float32:
        raise InvalidArgumentError(
            f"training needs float32 weights, got {param_dtype(model)}",
            "train model.float() and pass dtype='bfloat16' for mixed precision",
        )
    amp = training_precision(torch.float32, dtype)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    step = OptimizerStep(model, optimizer, amp)
    steps = epochs * len(_batches(train_cells, batch_size, None))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    report, best_state, start = TrainReport(), None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for idx in _batches(train_cells, batch_size, rng):
            with step.forward():
                loss = _loss(model, train_cells, idx, contract)
            refuse_non_finite(loss.detach(), model, "training loss")
            step(loss)
            schedule.step()
            losses.append(float(loss.detach()))
        with step.forward():
            val = evaluate(model, val_cells, contract)
        report.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val})
        report.epochs_run = epoch
        if log:
            print(f"epoch {epoch:3d}  train {np.mean(losses):.4f}  val {val:.4f}", flush=True)
        if val < report.best_val_loss:
            report.best_val_loss, report.best_epoch = val, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - report.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report.seconds = time.perf_counter() - start
    return report
