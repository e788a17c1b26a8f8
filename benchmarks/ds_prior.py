"""How Dawid–Skene's default Dirichlet prior was chosen: accuracy on gold of each candidate prior on the shared
datasets, with all answers and on sparser draws.

Run: .venv/bin/python benchmarks/ds_prior.py [--draws 10]   (about a minute)

A prior is pseudo-counts added to the M-step: `correct` on each confusion row's diagonal, `wrong` on each other
entry, `classes` on each class count. Per dataset (../shared/datasets or $CROWDMARKET_DATASETS): Dawid–Skene
(`aggregation.engine.aggregate`, method ds, default stopping) with every answer, then the mean over --draws seeded
draws keeping 3 and 5 random answers per task (`tests.aggregation.data.sparse_draws`, the draws the reference test
uses); a markdown table of accuracy on the gold tasks, and the mean over the datasets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregation.engine import aggregate  # noqa: E402
from aggregation.methods import DEFAULT_PRIOR, Prior  # noqa: E402
from tests.aggregation.data import dataset_names, dataset_root, load, sparse_draws  # noqa: E402

CANDIDATES = {
    "flat 0.01 (before)": Prior(0.01, 0.01, 0.01),
    "flat 0.1": Prior(0.1, 0.1, 0.1),
    "flat 1 (Laplace)": Prior(1, 1, 1),
    "diagonal 0.5, wrong 0.01": Prior(0.5, 0.01, 1),
    "diagonal 1, wrong 0.01": Prior(1, 0.01, 1),
    "diagonal 2, wrong 0.01": Prior(2, 0.01, 1),
    "diagonal 2, wrong 1": Prior(2, 1, 1),
}


def accuracy(d, prior: Prior, keep: np.ndarray | None = None) -> float:
    keep = np.ones(d.items.size, dtype=bool) if keep is None else keep
    labels = aggregate("ds", d.items[keep], d.workers[keep], d.labels[keep], prior=prior, **d.shape).result.labels
    return float((labels[d.gold_items] == d.gold_labels).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    root = dataset_root()
    if root is None:
        print("no dataset directory (set CROWDMARKET_DATASETS)")
        return 1
    names = dataset_names(root)
    columns = [(name, None) for name in names] + [(name, r) for r in (3, 5) for name in names]
    rows = []
    for label, prior in CANDIDATES.items():
        cells = []
        for name, per_task in columns:
            d = load(name, root)
            masks = [None] if per_task is None else sparse_draws(d, per_task, args.draws)
            cells.append(np.mean([accuracy(d, prior, keep) for keep in masks]))
        means = [np.mean(cells[i * len(names):(i + 1) * len(names)]) for i in range(3)]
        mark = " (default)" if prior == DEFAULT_PRIOR else ""
        rows.append([label + mark, *(f"{c:.4f}" for c in cells), *(f"**{m:.4f}**" for m in means)])
        print(f"{label + mark}: mean all answers {means[0]:.4f}, 3 per task {means[1]:.4f}, 5 per task "
              f"{means[2]:.4f}", flush=True)
    header = ["prior", *(f"{n}" if r is None else f"{n} ({r}/task)" for n, r in columns), "mean all", "mean 3/task",
              "mean 5/task"]
    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
