"""Real crowdsourcing datasets with gold, read with the stdlib `csv` module and factorised to int32 codes.

A dataset directory holds one folder per dataset with `answers.csv` (`worker,task,label`) and `gold.csv`
(`task,label`). The directory is found by `dataset_root`: the `CROWDMARKET_DATASETS` environment variable, else
`<repo>/../shared/datasets`, else `/work/shared/datasets`. The data are never copied into the repository.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "CROWDMARKET_DATASETS"
REPO = Path(__file__).resolve().parents[2]
FALLBACKS = (REPO.parent / "shared" / "datasets", Path("/work/shared/datasets"))
# The datasets the shared directory is documented to hold; tests parametrize over those actually present.
EXPECTED = ("wsd", "bluebirds", "temp", "rte", "dog")


def dataset_root() -> Path | None:
    """The first candidate directory that exists; None when there is none. A set environment variable is the
    only candidate (a wrong path then means no datasets, not a silent fallback)."""
    configured = os.environ.get(ENV_VAR)
    candidates = (Path(configured),) if configured else FALLBACKS
    return next((path for path in candidates if path.is_dir()), None)


def dataset_names(root: Path | None = None) -> list[str]:
    """The datasets present under `root` (folders with both CSV files): the documented ones first, in their
    documented order, then any others by name. The documented names when there is no directory at all, so the
    tests still show up (and skip) by name."""
    root = root if root is not None else dataset_root()
    if root is None:
        return list(EXPECTED)
    present = {p.name for p in root.iterdir() if (p / "answers.csv").is_file() and (p / "gold.csv").is_file()}
    return [name for name in EXPECTED if name in present] + sorted(present - set(EXPECTED))


@dataclass(frozen=True)
class Loaded:
    """One dataset as codes. `task_names[c]` / `worker_names[c]` / `label_names[c]` are the strings behind code
    `c`; labels are coded over the union of answered and gold labels, so every gold label has a code."""

    name: str
    items: np.ndarray  # int32 per answer
    workers: np.ndarray  # int32 per answer
    labels: np.ndarray  # int32 per answer
    n_items: int
    n_workers: int
    n_classes: int
    gold_items: np.ndarray  # int32 per gold row
    gold_labels: np.ndarray  # int32 per gold row
    task_names: np.ndarray  # str per item code
    worker_names: np.ndarray  # str per worker code
    label_names: np.ndarray  # str per label code

    @property
    def shape(self) -> dict[str, int]:
        return {"n_items": self.n_items, "n_workers": self.n_workers, "n_classes": self.n_classes}


def _read(path: Path, columns: tuple[str, ...]) -> list[np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = [tuple(row[c] for c in columns) for row in reader]
    return [np.array(col, dtype=str) for col in zip(*rows, strict=True)] if rows else [np.array([], str)] * len(columns)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # load() is cached: no test may change what another test reads
    return a


@functools.cache
def load(name: str, root: Path | None = None) -> Loaded:
    """Read `<root>/<name>/{answers,gold}.csv` (root defaults to `dataset_root()`) and factorise it. Item codes
    cover the answered tasks; a gold task without answers is an error (the shared datasets promise none)."""
    root = root if root is not None else dataset_root()
    if root is None:
        raise FileNotFoundError(f"no dataset directory: set {ENV_VAR}")
    folder = Path(root) / name
    workers_s, tasks_s, labels_s = _read(folder / "answers.csv", ("worker", "task", "label"))
    gold_tasks_s, gold_labels_s = _read(folder / "gold.csv", ("task", "label"))
    task_names, items = np.unique(tasks_s, return_inverse=True)
    worker_names, workers = np.unique(workers_s, return_inverse=True)
    label_names = np.unique(np.concatenate([labels_s, gold_labels_s]))
    gold_items = np.searchsorted(task_names, gold_tasks_s)
    unknown = (gold_items >= task_names.size) | (task_names[np.minimum(gold_items, task_names.size - 1)]
                                                  != gold_tasks_s)
    if unknown.any():
        raise ValueError(f"{folder}: gold tasks without answers: {gold_tasks_s[unknown][:5].tolist()}")
    labels, gold_labels = np.searchsorted(label_names, labels_s), np.searchsorted(label_names, gold_labels_s)
    items, workers, labels, gold_items, gold_labels = (
        _frozen(np.asarray(a, dtype=np.int32)) for a in (items, workers, labels, gold_items, gold_labels))
    return Loaded(name, items, workers, labels, n_items=int(task_names.size), n_workers=int(worker_names.size),
                  n_classes=int(label_names.size), gold_items=gold_items, gold_labels=gold_labels,
                  task_names=_frozen(task_names), worker_names=_frozen(worker_names), label_names=_frozen(label_names))


def sparse_draws(d: Loaded, per_task: int, draws: int) -> list[np.ndarray]:
    """Seeded draws (seeds 0, 1, ...) each keeping `per_task` random answers of every task: masks over the
    answers. A sparser crowd than the datasets' own, where workers have few answers each."""
    masks = []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(d.items.size), d.items))  # by task, randomly within one
        rank = np.empty(d.items.size, dtype=np.int64)
        rank[order] = np.arange(d.items.size) - np.searchsorted(d.items[order], d.items[order])
        masks.append(rank < per_task)
    return masks
