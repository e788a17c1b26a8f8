"""Benchmark our answer aggregation (`aggregation.engine.aggregate`) against crowd-kit 1.4.2: accuracy, speed and
memory, on real datasets and on a synthetic million answers.

Run: .venv/bin/python benchmarks/aggregation.py [--datasets DIR] [--quick] [--skip-1m] [--answers 1000000]

1. Real datasets (every folder with `answers.csv` + `gold.csv` under --datasets, $CROWDMARKET_DATASETS,
   ../shared/datasets next to the repository or /work/shared/datasets): accuracy on the gold tasks and seconds (best
   of 3 after one warm-up run, `time.perf_counter`) for ours (mv, wmv, ds at its default stopping, ds for 100 fixed
   iterations, tol=0 and posterior_tol=0) and crowd-kit's MajorityVote, Wawa, DawidSkene(n_iter=100) at its default
   tol, DawidSkene for 100 fixed iterations (tol=-inf), OneCoinDawidSkene, GLAD and MACE (`--quick` skips GLAD and
   MACE). Ours is timed from the integer arrays, crowd-kit's `fit_predict` from its DataFrame (string columns as in
   the files); neither includes parsing. crowd-kit's Wawa crashes with scikit-learn >= 1.6 (`__sklearn_tags__`); when
   it does, the same recipe is built from crowd-kit parts (MajorityVote, then `get_accuracy` against it, then
   MajorityVote weighted by those skills) and labelled "Wawa (parts)". Majority-vote ties: ours breaks them with a
   seeded RNG, crowd-kit gives them to the label met first.
2. Gold-aware: per dataset, 10 seeded draws each reveal a random 8% of the gold tasks as gold. Ours runs `ds-gold`
   and `wmv` with that gold; every method, ours and crowd-kit's, is scored on the other 92% of the gold tasks, and
   the table shows the mean over the draws. crowd-kit's methods do not take gold here (they are the part-1 fits
   scored on the same tasks), except one extra, informational column: crowd-kit's `DawidSkene.fit(true_labels=...)`,
   which does accept gold. Target: ds-gold >= the best crowd-kit method. Also checked: our DS accuracy (part 1) >=
   crowd-kit DawidSkene's within 0.1 pp.
3. A synthetic set drawn with a fixed seed from the Dawid-Skene model: --answers (1,000,000) answers, 5 per task from
   5 distinct workers (200,000 tasks, 2,000 workers at 1M), 4 classes with priors 0.4/0.3/0.2/0.1, every worker a
   random confusion matrix (each diagonal entry uniform in 0.6-0.95, the rest of the row split by a flat Dirichlet),
   10% of workers spammers (half answer uniformly at random, half always give one label); answers shuffled. Ours (ds,
   100 iterations, tol=0, posterior_tol=0) and crowd-kit's DawidSkene(n_iter=100, tol=-inf) each run in a fresh child
   process that loads the set from an .npz and builds its input (ours: the int64 arrays; crowd-kit: a DataFrame with
   int64 worker/task/label columns, the friendliest input crowd-kit takes, and the raw arrays dropped), then fits
   once: seconds of the fit, accuracy against the generated truth, and memory.

   How memory is measured: from the kernel's resident-set accounting, no tracemalloc (it misses memory that
   numpy/pandas/scipy allocate outside Python's allocator hooks, and slows the run). Before the fit the child
   calls gc.collect(), reads VmRSS from /proc/self/status as its baseline, and resets its high-water mark
   (writing 5 to /proc/self/clear_refs); after the fit it reads VmHWM, the peak RSS since that reset. "fit
   increase" = that peak - the baseline; "total peak" = the child's peak over its whole life (imports, loading,
   building the input, fitting). getrusage(RUSAGE_SELF).ru_maxrss is recorded and printed too but NOT used: for
   an exec'd child Linux folds the parent's pre-exec high-water mark into ru_maxrss (this parent, holding the
   generated set and crowd-kit, would show as the child's floor), and clear_refs does not reset it. If the reset
   is refused the peak is the whole-life VmHWM and the increase is an upper bound (flagged in the output).
4. Command line end to end on the same set written as answers.csv (worker,task,label as "w17","t123","c2"): wall
   seconds of `crowdmarket aggregate --method ds --answers answers.csv --out out.csv` (its default stopping) and of
   an equivalent crowd-kit script (pandas.read_csv, DawidSkene(n_iter=100) at its default stopping,
   fit_predict_proba, label = argmax, confidence = max, written as task,label,confidence), one run each as a
   subprocess (interpreter start and imports included in both), the EM iterations each ran, and the accuracy of each
   output (target: >= 15x at equal accuracy, within 0.1 points); `crowdmarket aggregate --help` (best of 5, target <
   0.3 s); and our read step alone (`aggregation.io.read_answers`, best of 3) next to pandas.read_csv.
5. A markdown summary table, then machine-readable lines `BENCH name=value`.

`--skip-1m` skips parts 3 and 4. Every draw and the generator use fixed seeds. The machine (2 cores) is shared,
so the load average is printed at the start and the end; seconds are best-of-3 where a method is cheap enough to
repeat.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 20240601
DRAW_SEED = 1000
GOLD_SHARE = 0.08
N_DRAWS = 10
ITERATIONS = 100
TOLERANCE_PP = 0.1
TARGET_SPEEDUP, TARGET_MEMORY, TARGET_CLI, TARGET_HELP = 30.0, 1 / 3, 15.0, 0.3
CK_SLOW = ("GLAD", "MACE")
CROWDMARKET = str(Path(sys.executable).with_name("crowdmarket"))

CK_SCRIPT = """\
import sys

import pandas as pd
from crowdkit.aggregation import DawidSkene

data = pd.read_csv(sys.argv[1])
model = DawidSkene(n_iter=100)
proba = model.fit_predict_proba(data)
print(f"iterations={len(model.loss_history_)}", file=sys.stderr)
out = pd.DataFrame({"task": proba.index, "label": proba.idxmax(axis=1).to_numpy(),
                    "confidence": proba.max(axis=1).to_numpy()})
out.to_csv(sys.argv[2], index=False)
"""


# ---- helpers ---------------------------------------------------------------------------------------------

def best_of(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """One warm-up call, then `repeats` timed calls; returns the last result and the fastest time."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def proc_status(*keys: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in keys:
                values[name] = int(rest.split()[0])
    return values


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.4f}" if seconds < 0.1 else f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def fmt_acc(accuracy: float | None) -> str:
    return "n/a" if accuracy is None else f"{accuracy:.4f}"


def fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.3f}x"


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MB"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(header: list[str], rows: list[list[str]], first_left: bool = True) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [str(c).ljust(w) if i == 0 and first_left else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells)

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


# ---- real datasets ---------------------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    frame: Any  # pandas DataFrame, worker/task/label as strings, file order
    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    tasks: np.ndarray  # task id per item code
    classes: np.ndarray  # label string per class code
    gold_tasks: np.ndarray  # strings
    gold_labels: np.ndarray  # strings
    gold_items: np.ndarray  # item codes of the gold tasks
    gold_codes: np.ndarray  # class codes of their labels
    dropped_gold: int = 0

    @property
    def shape(self) -> dict[str, int]:
        return {"n_items": len(self.tasks), "n_workers": int(self.workers.max()) + 1, "n_classes": len(self.classes)}


def find_datasets(option: str | None) -> Path | None:
    if option:  # asked for by name: that folder or nothing
        return Path(option) if Path(option).is_dir() else None
    candidates = [os.environ.get("CROWDMARKET_DATASETS"), ROOT.parent / "shared" / "datasets",
                  "/work/shared/datasets"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_dataset(folder: Path) -> Dataset:
    import pandas as pd

    frame = pd.read_csv(folder / "answers.csv", dtype=str, keep_default_na=False)[["worker", "task", "label"]]
    gold = pd.read_csv(folder / "gold.csv", dtype=str, keep_default_na=False)
    items, tasks = pd.factorize(frame["task"])
    workers, _ = pd.factorize(frame["worker"])
    classes = np.array(sorted(set(frame["label"]) | set(gold["label"])), dtype=object)
    class_code = {c: i for i, c in enumerate(classes)}
    labels = frame["label"].map(class_code).to_numpy(np.int64)
    item_code = {t: i for i, t in enumerate(tasks)}
    known = gold["task"].isin(item_code)
    gold = gold[known]
    return Dataset(folder.name, frame, items.astype(np.int64), workers.astype(np.int64), labels,
                   np.asarray(tasks, dtype=object), classes, gold["task"].to_numpy(object),
                   gold["label"].to_numpy(object), gold["task"].map(item_code).to_numpy(np.int64),
                   gold["label"].map(class_code).to_numpy(np.int64), int((~known).sum()))


def ours_correct(ds: Dataset, labels: np.ndarray) -> np.ndarray:
    """Per gold task: did our per-item labels get it right?"""
    return labels[ds.gold_items] == ds.gold_codes


def ck_correct(ds: Dataset, labels: Any) -> np.ndarray:
    """Per gold task: did crowd-kit's task-indexed labels get it right?"""
    predicted = labels.reindex(ds.gold_tasks).to_numpy(object)
    return np.array([str(p) == g for p, g in zip(predicted, ds.gold_labels, strict=True)])


@dataclass
class Run:
    correct: np.ndarray  # per gold task
    seconds: float | None
    iterations: int | None = None

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def wawa_from_parts(frame: Any) -> Any:
    """crowd-kit's Wawa recipe from its parts: MV, worker accuracy against it, MV weighted by that accuracy."""
    from crowdkit.aggregation import MajorityVote
    from crowdkit.aggregation.utils import get_accuracy

    mv = MajorityVote().fit(frame)
    skills = get_accuracy(frame, true_labels=mv.labels_, by="worker")
    return MajorityVote().fit(frame, skills=skills).labels_


def ck_methods(quick: bool) -> tuple[dict[str, Callable[[Any], tuple[Any, int | None]]], str]:
    """crowd-kit's methods: name -> fit(frame) returning (task labels, EM iterations). Also a note on Wawa."""
    import pandas as pd
    from crowdkit.aggregation import GLAD, MACE, DawidSkene, MajorityVote, OneCoinDawidSkene, Wawa

    probe = pd.DataFrame({"worker": ["a", "b", "c"], "task": ["t", "t", "t"], "label": ["x", "x", "y"]})
    try:
        Wawa().fit_predict(probe)
        wawa_name, note = "Wawa", "crowd-kit Wawa ran as is"
    except Exception as exc:  # report whatever it is
        wawa_name = "Wawa (parts)"
        import sklearn

        cause = "__sklearn_tags__" if "__sklearn_tags__" in str(exc) else " ".join(str(exc).split())[:60]
        note = (f"crowd-kit Wawa fails here ({type(exc).__name__}: {cause}, scikit-learn {sklearn.__version__}); "
                "built from crowd-kit parts")

    def em(model: Any) -> Callable[[Any], tuple[Any, int | None]]:
        def fit(frame: Any) -> tuple[Any, int | None]:
            labels = model.fit_predict(frame)
            history = getattr(model, "loss_history_", None)
            return labels, len(history) if history is not None else None
        return fit

    methods: dict[str, Callable[[Any], tuple[Any, int | None]]] = {
        "MajorityVote": lambda f: (MajorityVote().fit_predict(f), None),
        wawa_name: (lambda f: (Wawa().fit_predict(f), None)) if wawa_name == "Wawa" else (
            lambda f: (wawa_from_parts(f), None)),
        "DawidSkene": lambda f: em(DawidSkene(n_iter=ITERATIONS))(f),
        "DawidSkene 100 it": lambda f: em(DawidSkene(n_iter=ITERATIONS, tol=float("-inf")))(f),
        "OneCoinDawidSkene": lambda f: em(OneCoinDawidSkene())(f),
    }
    if not quick:
        methods["GLAD"] = lambda f: em(GLAD())(f)
        methods["MACE"] = lambda f: (MACE().fit_predict(f), None)
    return methods, note


OURS = {"mv": {"method": "mv"}, "wmv": {"method": "wmv"}, "ds": {"method": "ds"},
        "ds 100 it": {"method": "ds", "max_iter": ITERATIONS, "tol": 0.0, "posterior_tol": 0.0},
        "onecoin": {"method": "onecoin"}}


@dataclass
class DatasetReport:
    ds: Dataset
    ours: dict[str, Run] = field(default_factory=dict)
    ck: dict[str, Run] = field(default_factory=dict)
    gold_means: dict[str, float] = field(default_factory=dict)  # part 2, mean accuracy on the 92%
    n_revealed: int = 0


def run_dataset(ds: Dataset, methods: dict[str, Callable], repeats: int) -> DatasetReport:
    from aggregation.engine import aggregate

    report = DatasetReport(ds)
    for name, kwargs in OURS.items():
        agg, seconds = best_of(lambda kw=kwargs: aggregate(items=ds.items, workers=ds.workers, labels=ds.labels,
                                                           seed=0, **kw, **ds.shape), repeats)
        report.ours[name] = Run(ours_correct(ds, agg.result.labels), seconds,
                                agg.result.iterations if kwargs["method"] == "ds" else None)
    for name, fit in methods.items():
        (labels, iterations), seconds = best_of(lambda f=fit: f(ds.frame), repeats)
        report.ck[name] = Run(ck_correct(ds, labels), seconds, iterations)
    return report


def gold_draws(report: DatasetReport, draws: int, share: float) -> None:
    """Part 2: seeded draws revealing `share` of the gold; means over draws of accuracy on the unrevealed rest."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    from aggregation.engine import aggregate

    ds = report.ds
    n_gold = len(ds.gold_items)
    report.n_revealed = n_reveal = max(1, round(share * n_gold))
    scores: dict[str, list[float]] = {}
    gold_series_index = ds.gold_tasks
    for draw in range(draws):
        rng = np.random.default_rng(DRAW_SEED + draw)
        revealed = np.zeros(n_gold, dtype=bool)
        revealed[rng.choice(n_gold, size=n_reveal, replace=False)] = True
        rest = ~revealed
        gold = {"gold_items": ds.gold_items[revealed], "gold_labels": ds.gold_codes[revealed]}
        for name, method in (("ds-gold", "ds-gold"), ("wmv+gold", "wmv")):
            agg = aggregate(method, ds.items, ds.workers, ds.labels, seed=0, **gold, **ds.shape)
            scores.setdefault(name, []).append(float(ours_correct(ds, agg.result.labels)[rest].mean()))
        for name in ("ds", "mv"):
            scores.setdefault(name, []).append(float(report.ours[name].correct[rest].mean()))
        for name, run in report.ck.items():
            scores.setdefault(name, []).append(float(run.correct[rest].mean()))
        truth = pd.Series(ds.gold_labels[revealed], index=gold_series_index[revealed])
        labels = DawidSkene(n_iter=ITERATIONS).fit(ds.frame, true_labels=truth).labels_
        scores.setdefault("ck DS+gold", []).append(float(ck_correct(ds, labels)[rest].mean()))
    report.gold_means = {name: float(np.mean(values)) for name, values in scores.items()}


# ---- synthetic million ----------------------------------------------------------------------------------

def generate(n_answers: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Answers drawn from the Dawid-Skene model (see the module docstring); arrays int64, rows shuffled."""
    rng = np.random.default_rng(seed)
    k, per_task = 4, 5
    n_items = n_answers // per_task
    n_workers = max(2 * per_task, n_answers // 500)
    priors = np.array([0.4, 0.3, 0.2, 0.1])
    truth = rng.choice(k, size=n_items, p=priors)
    diagonal = rng.uniform(0.6, 0.95, size=(n_workers, k))
    spread = rng.dirichlet(np.ones(k - 1), size=(n_workers, k))
    confusion = np.zeros((n_workers, k, k))
    for true in range(k):
        others = [c for c in range(k) if c != true]
        confusion[:, true, true] = diagonal[:, true]
        confusion[:, true, others] = (1 - diagonal[:, true])[:, None] * spread[:, true, :]
    spammers = rng.choice(n_workers, size=n_workers // 10, replace=False)
    uniform, constant = spammers[: len(spammers) // 2], spammers[len(spammers) // 2:]
    confusion[uniform] = 1.0 / k
    confusion[constant] = 0.0
    confusion[constant[:, None], np.arange(k), rng.integers(k, size=len(constant))[:, None]] = 1.0
    chosen = rng.integers(n_workers, size=(n_items, per_task))
    while True:  # redraw every task that got a worker twice
        ordered = np.sort(chosen, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            break
        chosen[repeated] = rng.integers(n_workers, size=(int(repeated.sum()), per_task))
    items = np.repeat(np.arange(n_items), per_task)
    workers = chosen.ravel()
    cumulative = confusion.cumsum(axis=2)
    cumulative[..., -1] = 1.0
    labels = (rng.random(items.size)[:, None] >= cumulative[workers, truth[items]]).sum(axis=1)
    order = rng.permutation(items.size)
    return {"items": items[order].astype(np.int64), "workers": workers[order].astype(np.int64),
            "labels": labels[order].astype(np.int64), "truth": truth.astype(np.int64),
            "shape": np.array([n_items, n_workers, k], dtype=np.int64), "spammers": np.asarray(spammers)}


def child(method: str, npz: str) -> None:
    """Fresh process: load, build the method's input, fit once; print one JSON line with time, accuracy, memory."""
    data = np.load(npz)
    n_items, n_workers, n_classes = (int(v) for v in data["shape"])
    truth = data["truth"]
    if method == "ours":
        from aggregation.engine import aggregate

        items, workers, labels = data["items"], data["workers"], data["labels"]

        def fit() -> np.ndarray:
            return aggregate("ds", items, workers, labels, n_items=n_items, n_workers=n_workers,
                             n_classes=n_classes, max_iter=ITERATIONS, tol=0.0, posterior_tol=0.0).result.labels

        def iterations_of(_: Any) -> int:
            return ITERATIONS
    else:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene

        frame = pd.DataFrame({"worker": data["workers"], "task": data["items"], "label": data["labels"]})
        model = DawidSkene(n_iter=ITERATIONS, tol=float("-inf"))

        def fit() -> np.ndarray:
            return model.fit_predict(frame).reindex(np.arange(n_items)).to_numpy()

        def iterations_of(_: Any) -> int:
            return len(model.loss_history_)
    del data
    gc.collect()
    setup = proc_status("VmRSS", "VmHWM")
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    labels_out = fit()
    seconds = time.perf_counter() - start
    after = proc_status("VmHWM", "VmRSS")
    ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accuracy = float((labels_out == truth).mean())
    print("CHILD " + json.dumps({
        "method": method, "seconds": seconds, "accuracy": accuracy, "iterations": iterations_of(labels_out),
        "rss_before_kib": setup["VmRSS"], "hwm_setup_kib": setup["VmHWM"], "hwm_fit_kib": after["VmHWM"],
        "rss_after_kib": after["VmRSS"], "hwm_reset": reset, "ru_maxrss_before_kib": ru_before,
        "ru_maxrss_after_kib": ru_after}), flush=True)


def run_child(method: str, npz: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--npz", str(npz)], capture_output=True,
                          text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CHILD ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"child {method} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1][len("CHILD "):])
    result["fit_increase_kib"] = result["hwm_fit_kib"] - result["rss_before_kib"]
    result["total_peak_kib"] = max(result["hwm_setup_kib"], result["hwm_fit_kib"])
    return result


def write_answers_csv(data: dict[str, np.ndarray], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"worker": "w" + pd.Series(data["workers"]).astype(str),
                          "task": "t" + pd.Series(data["items"]).astype(str),
                          "label": "c" + pd.Series(data["labels"]).astype(str)})
    frame.to_csv(path, index=False)


def output_accuracy(path: Path, truth: np.ndarray) -> float | None:
    """Accuracy of a task,label CSV ("t123","c2") against the generated truth; None if unreadable."""
    import pandas as pd

    try:
        out = pd.read_csv(path, dtype=str)
        tasks = out["task"].str[1:].astype(np.int64).to_numpy()
        labels = out["label"].str[1:].astype(np.int64).to_numpy()
    except Exception:  # the format is another engineer's: n/a
        return None
    predicted = np.full(truth.size, -1)
    predicted[tasks] = labels
    return float((predicted == truth).mean())


def timed_subprocess(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    return time.perf_counter() - start, proc


def cli_end_to_end(data: dict[str, np.ndarray], tmp: Path) -> dict[str, Any]:
    import pandas as pd

    result: dict[str, Any] = {"notes": []}
    answers = tmp / "answers.csv"
    start = time.perf_counter()
    write_answers_csv(data, answers)
    result["notes"].append(f"answers.csv: {answers.stat().st_size / 1e6:.1f} MB, written in "
                           f"{time.perf_counter() - start:.1f}s")
    help_seconds = []
    for _ in range(5):
        seconds, proc = timed_subprocess([CROWDMARKET, "aggregate", "--help"], tmp)
        if proc.returncode:
            raise RuntimeError(f"crowdmarket aggregate --help failed: {proc.stderr[-2000:]}")
        help_seconds.append(seconds)
    result["help"] = min(help_seconds)
    # Not --quiet: the summary line on stderr says how many iterations ran (the bar costs nothing measurable).
    command = [CROWDMARKET, "aggregate", "--method", "ds", "--answers", str(answers), "--out", str(tmp / "out.csv")]
    result["ours"], proc = timed_subprocess(command, tmp)
    if proc.returncode:
        raise RuntimeError(f"crowdmarket aggregate failed: {proc.stderr[-2000:]}")
    result["ours_iterations"] = int(re.search(r"(\d+) iterations? \(", proc.stderr).group(1))
    result["ours_accuracy"] = output_accuracy(tmp / "out.csv", data["truth"])
    script = tmp / "ck_ds.py"
    script.write_text(CK_SCRIPT)
    result["ck"], proc = timed_subprocess([sys.executable, str(script), str(answers), str(tmp / "ck_out.csv")], tmp)
    if proc.returncode:
        raise RuntimeError(f"crowd-kit script failed: {proc.stderr[-2000:]}")
    result["ck_iterations"] = int(re.search(r"iterations=(\d+)", proc.stderr).group(1))
    result["ck_accuracy"] = output_accuracy(tmp / "ck_out.csv", data["truth"])
    from aggregation.io import read_answers

    _, result["read"] = best_of(lambda: read_answers(answers), 3)
    _, result["pandas_read"] = best_of(lambda: pd.read_csv(answers), 3)
    return result


# ---- main ------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", help="folder of datasets (default: $CROWDMARKET_DATASETS, ../shared/datasets)")
    parser.add_argument("--quick", action="store_true", help="skip crowd-kit's GLAD and MACE")
    parser.add_argument("--skip-1m", action="store_true", help="skip the synthetic set and the CLI run")
    parser.add_argument("--answers", type=int, default=1_000_000, help="size of the synthetic set")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method on real datasets")
    parser.add_argument("--draws", type=int, default=N_DRAWS)
    parser.add_argument("--child", choices=["ours", "ck"], help=argparse.SUPPRESS)
    parser.add_argument("--npz", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.npz)
        return 0

    t0 = time.perf_counter()
    import crowdkit

    print(f"crowdmarket aggregation vs crowd-kit {crowdkit.__version__}; python {sys.version.split()[0]}, "
          f"numpy {np.__version__}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    summary: list[list[str]] = []
    bench: list[tuple[str, float]] = []
    checks: list[str] = []

    # 1 + 2: real datasets
    folder = find_datasets(args.datasets)
    reports: list[DatasetReport] = []
    if folder is None:
        print("no datasets folder found; skipping parts 1-2")
    else:
        methods, wawa_note = ck_methods(args.quick)
        print(f"datasets: {folder}; {wawa_note}" + ("; --quick: GLAD and MACE skipped" if args.quick else ""))
        found = sorted((d for d in folder.iterdir() if (d / "answers.csv").is_file() and (d / "gold.csv").is_file()),
                       key=lambda d: (count_lines(d / "answers.csv"), d.name))
        print("\n== 1. accuracy on gold / seconds (best of "
              f"{args.repeats} after a warm-up) / EM iterations run ==", flush=True)
        for directory in found:
            ds = load_dataset(directory)
            start = time.perf_counter()
            report = run_dataset(ds, methods, args.repeats)
            gold_draws(report, args.draws, GOLD_SHARE)
            reports.append(report)
            shape = ds.shape
            print(f"\n{ds.name}: {len(ds.items):,} answers, {shape['n_items']} tasks, {shape['n_workers']} workers, "
                  f"{shape['n_classes']} classes, {len(ds.gold_items)} gold tasks"
                  + (f" ({ds.dropped_gold} gold tasks without answers dropped)" if ds.dropped_gold else "")
                  + f"  [{time.perf_counter() - start:.0f}s]")
            rows = [[f"ours {n}", fmt_acc(r.accuracy), fmt_s(r.seconds), str(r.iterations or "")]
                    for n, r in report.ours.items()]
            rows += [[f"crowd-kit {n}", fmt_acc(r.accuracy), fmt_s(r.seconds), str(r.iterations or "")]
                     for n, r in report.ck.items()]
            for line in table(["method", "accuracy", "seconds", "iters"], rows):
                print("  " + line)
            o, c = report.ours, report.ck
            print(f"  speed (crowd-kit s / ours s): MV {fmt_ratio(ratio(c['MajorityVote'].seconds, o['mv'].seconds))}"
                  f", DS {fmt_ratio(ratio(c['DawidSkene'].seconds, o['ds'].seconds))}, DS 100 it "
                  f"{fmt_ratio(ratio(c['DawidSkene 100 it'].seconds, o['ds 100 it'].seconds))}, one-coin "
                  f"{fmt_ratio(ratio(c['OneCoinDawidSkene'].seconds, o['onecoin'].seconds))}", flush=True)

        print(f"\n== 2. gold-aware: {args.draws} seeded draws reveal {GOLD_SHARE:.0%} of the gold tasks; mean "
              f"accuracy on the other {1 - GOLD_SHARE:.0%} ==")
        ck_names = list(methods)
        short = {"MajorityVote": "MV", "DawidSkene": "DS", "DawidSkene 100 it": "DS100", "OneCoinDawidSkene": "OCDS",
                 "Wawa": "Wawa", "Wawa (parts)": "Wawa*", "GLAD": "GLAD", "MACE": "MACE"}
        header = ["dataset", "gold", "ds-gold", "wmv+g", "ds", "mv", *(f"ck {short[n]}" for n in ck_names),
                  "ck DS+gold", "best ck", "gap pp", "target"]
        rows = []
        gold_cells: dict[str, str] = {}
        for report in reports:
            means = report.gold_means
            best = max(ck_names, key=lambda n: means[n])
            gap = round(100 * (means["ds-gold"] - means[best]), 6)
            verdict = "PASS" if means["ds-gold"] >= means[best] - 1e-12 else "MISS"
            rows.append([report.ds.name, str(report.n_revealed), *(fmt_acc(means[n]) for n in
                         ("ds-gold", "wmv+gold", "ds", "mv", *ck_names, "ck DS+gold")), short[best], f"{gap:+.2f}",
                         verdict])
            checks.append(f"ds-gold >= best crowd-kit method ({short[best]}) on {report.ds.name} "
                          f"(8% gold, mean of {args.draws} draws): {verdict} ({gap:+.2f} pp)")
            gap_ck_gold = 100 * (means["ds-gold"] - means["ck DS+gold"])
            checks.append(f"  (info) ds-gold vs crowd-kit DawidSkene given the same gold (true_labels) on "
                          f"{report.ds.name}: {gap_ck_gold:+.2f} pp")
            gold_cells[report.ds.name] = f"{means['ds-gold']:.4f} / {means[best]:.4f} ({gap:+.2f} pp {verdict})"
            bench += [(f"dsgold_acc_{report.ds.name}", means["ds-gold"]),
                      (f"dsgold_gap_pp_{report.ds.name}", gap)]
        for line in table(header, rows):
            print("  " + line)
        if args.quick:
            print("  (--quick: best crowd-kit method among those run; GLAD and MACE skipped)")
        print("  Wawa* = crowd-kit's Wawa recipe from its parts; ck DS+gold = crowd-kit DawidSkene.fit(true_labels="
              "revealed gold), informational, not in 'best ck'")
        print()
        for report in reports:
            o, c = report.ours, report.ck
            for mine, theirs, label in (("ds", "DawidSkene", "default tol"), ("ds 100 it", "DawidSkene 100 it",
                                                                             "100 iterations")):
                diff = 100 * (o[mine].accuracy - c[theirs].accuracy)
                ok = diff >= -TOLERANCE_PP - 1e-9
                checks.append(f"DS accuracy >= crowd-kit DawidSkene within {TOLERANCE_PP} pp on {report.ds.name} "
                              f"({label}): {'PASS' if ok else 'MISS'} ({o[mine].accuracy:.4f} vs "
                              f"{c[theirs].accuracy:.4f}, {diff:+.2f} pp)")
            bench += [(f"acc_ds_{report.ds.name}", o["ds"].accuracy),
                      (f"acc_ck_ds_{report.ds.name}", c["DawidSkene"].accuracy),
                      (f"acc_ds100_{report.ds.name}", o["ds 100 it"].accuracy),
                      (f"acc_ck_ds100_{report.ds.name}", c["DawidSkene 100 it"].accuracy),
                      (f"speedup_mv_{report.ds.name}", ratio(c["MajorityVote"].seconds, o["mv"].seconds)),
                      (f"speedup_ds_{report.ds.name}", ratio(c["DawidSkene"].seconds, o["ds"].seconds)),
                      (f"speedup_ds100_{report.ds.name}", ratio(c["DawidSkene 100 it"].seconds,
                                                                o["ds 100 it"].seconds))]
            summary.append([report.ds.name, f"{o['mv'].accuracy:.4f} / {c['MajorityVote'].accuracy:.4f}",
                            f"{o['ds'].accuracy:.4f} / {c['DawidSkene'].accuracy:.4f}",
                            f"{o['ds 100 it'].accuracy:.4f} / {c['DawidSkene 100 it'].accuracy:.4f}",
                            gold_cells[report.ds.name],
                            fmt_ratio(ratio(c["MajorityVote"].seconds, o["mv"].seconds)),
                            fmt_ratio(ratio(c["DawidSkene"].seconds, o["ds"].seconds)),
                            fmt_ratio(ratio(c["DawidSkene 100 it"].seconds, o["ds 100 it"].seconds))])
        for check in checks:
            print(check)

    # 3 + 4: synthetic million
    big: list[list[str]] = []
    if not args.skip_1m:
        with tempfile.TemporaryDirectory(prefix="bench-aggregation-") as tmp_name:
            tmp = Path(tmp_name)
            start = time.perf_counter()
            data = generate(args.answers)
            n_items, n_workers, n_classes = (int(v) for v in data["shape"])
            npz = tmp / "answers.npz"
            np.savez(npz, **data)
            print(f"\n== 3. synthetic Dawid-Skene set (seed {SEED}): {data['items'].size:,} answers, "
                  f"{n_items:,} tasks, {n_workers:,} workers ({len(data['spammers'])} spammers), {n_classes} classes; "
                  f"generated in {time.perf_counter() - start:.1f}s ==", flush=True)
            runs = {}
            for method in ("ours", "ck"):
                runs[method] = r = run_child(method, npz)
                print(f"  {'ours ds' if method == 'ours' else 'crowd-kit DawidSkene'} ({r['iterations']} it): "
                      f"fit {r['seconds']:.2f}s, accuracy {r['accuracy']:.4f}; RSS before fit "
                      f"{mib(r['rss_before_kib'])}, peak during fit {mib(r['hwm_fit_kib'])} "
                      f"(+{mib(r['fit_increase_kib'])}), peak while loading {mib(r['hwm_setup_kib'])}, "
                      f"total peak {mib(r['total_peak_kib'])}"
                      + ("" if r["hwm_reset"] else " [VmHWM reset refused: increase is an upper bound]")
                      + f"; ru_maxrss {mib(r['ru_maxrss_before_kib'])} -> {mib(r['ru_maxrss_after_kib'])} "
                      "(includes the parent's pre-exec peak, not used)", flush=True)
            ours, ck = runs["ours"], runs["ck"]
            speed = ratio(ck["seconds"], ours["seconds"])
            mem_fit = ratio(ours["fit_increase_kib"], ck["fit_increase_kib"])
            mem_total = ratio(ours["total_peak_kib"], ck["total_peak_kib"])
            print(f"  speed crowd-kit / ours: {fmt_ratio(speed)} (target >= {TARGET_SPEEDUP:.0f}x: "
                  f"{'PASS' if speed and speed >= TARGET_SPEEDUP else 'MISS'})")
            print(f"  memory ours / crowd-kit: fit increase {mem_fit:.3f}, total peak {mem_total:.3f} (target <= "
                  f"{TARGET_MEMORY:.3f}: fit {'PASS' if mem_fit <= TARGET_MEMORY else 'MISS'}, total "
                  f"{'PASS' if mem_total <= TARGET_MEMORY else 'MISS'})", flush=True)
            label = f"{data['items'].size / 1e6:g}M"
            big += [[f"{label}: DS 100 it fit, seconds", f"{ours['seconds']:.2f}", f"{ck['seconds']:.2f}",
                     fmt_ratio(speed), f">= {TARGET_SPEEDUP:.0f}x", "PASS" if speed >= TARGET_SPEEDUP else "MISS"],
                    [f"{label}: accuracy vs truth", f"{ours['accuracy']:.4f}", f"{ck['accuracy']:.4f}", "", "", ""],
                    [f"{label}: RSS increase during fit", mib(ours["fit_increase_kib"]), mib(ck["fit_increase_kib"]),
                     f"{mem_fit:.3f}", f"<= {TARGET_MEMORY:.3f}", "PASS" if mem_fit <= TARGET_MEMORY else "MISS"],
                    [f"{label}: total peak RSS", mib(ours["total_peak_kib"]), mib(ck["total_peak_kib"]),
                     f"{mem_total:.3f}", f"<= {TARGET_MEMORY:.3f}", "PASS" if mem_total <= TARGET_MEMORY else "MISS"]]
            bench += [("speedup_ds100_1m", speed), ("seconds_ds100_1m_ours", ours["seconds"]),
                      ("seconds_ds100_1m_ck", ck["seconds"]), ("acc_ds100_1m_ours", ours["accuracy"]),
                      ("acc_ds100_1m_ck", ck["accuracy"]), ("mem_fit_ratio_1m", mem_fit),
                      ("mem_total_ratio_1m", mem_total), ("mem_fit_mb_1m_ours", ours["fit_increase_kib"] / 1024),
                      ("mem_fit_mb_1m_ck", ck["fit_increase_kib"] / 1024),
                      ("mem_peak_mb_1m_ours", ours["total_peak_kib"] / 1024),
                      ("mem_peak_mb_1m_ck", ck["total_peak_kib"] / 1024)]

            print("\n== 4. command line end to end (wall seconds of one subprocess each) ==", flush=True)
            cli = cli_end_to_end(data, tmp)
            for note in cli["notes"]:
                print(f"  {note}")
            cli_ratio = ratio(cli["ck"], cli["ours"])
            equal = abs(cli["ours_accuracy"] - cli["ck_accuracy"]) <= 0.001
            cli_verdict = "PASS" if cli_ratio >= TARGET_CLI and equal else "MISS"
            print(f"  crowdmarket aggregate --method ds (default stopping: {cli['ours_iterations']} iterations): "
                  f"{fmt_s(cli['ours'])}s, accuracy {fmt_acc(cli['ours_accuracy'])}")
            print(f"  crowd-kit script (read_csv, DawidSkene at its default stopping: {cli['ck_iterations']} "
                  f"iterations, write CSV): {fmt_s(cli['ck'])}s, accuracy {fmt_acc(cli['ck_accuracy'])}")
            print(f"  ratio crowd-kit / ours: {fmt_ratio(cli_ratio)} (target >= {TARGET_CLI:.0f}x at equal "
                  f"accuracy, within 0.1 points: {cli_verdict})")
            print(f"  crowdmarket aggregate --help: {fmt_s(cli['help'])}s (best of 5; target < {TARGET_HELP} s: "
                  f"{'PASS' if cli['help'] < TARGET_HELP else 'MISS'})")
            print(f"  read step: aggregation.io.read_answers {fmt_s(cli['read'])}s, pandas.read_csv "
                  f"{fmt_s(cli['pandas_read'])}s (best of 3)", flush=True)
            big += [[f"{label}: CLI end to end, default stopping, seconds", fmt_s(cli["ours"]), fmt_s(cli["ck"]),
                     fmt_ratio(cli_ratio), f">= {TARGET_CLI:.0f}x", cli_verdict],
                    [f"{label}: CLI EM iterations", str(cli["ours_iterations"]), str(cli["ck_iterations"]), "", "",
                     ""],
                    [f"{label}: CLI output accuracy vs truth", fmt_acc(cli["ours_accuracy"]),
                     fmt_acc(cli["ck_accuracy"]), "", "equal", "PASS" if equal else "MISS"],
                    ["`crowdmarket aggregate --help`, seconds", fmt_s(cli["help"]), "", "", f"< {TARGET_HELP}",
                     "PASS" if cli["help"] < TARGET_HELP else "MISS"],
                    [f"{label}: read answers.csv, seconds", fmt_s(cli["read"]), fmt_s(cli["pandas_read"]) +
                     " (pandas)", "", "", ""]]
            bench += [("cli_seconds_1m_ours", cli["ours"]), ("cli_seconds_1m_ck", cli["ck"]),
                      ("cli_speedup_1m", cli_ratio), ("cli_iterations_1m_ours", cli["ours_iterations"]),
                      ("cli_iterations_1m_ck", cli["ck_iterations"]), ("cli_acc_1m_ours", cli["ours_accuracy"]),
                      ("cli_acc_1m_ck", cli["ck_accuracy"]), ("help_seconds", cli["help"]),
                      ("read_seconds_1m_ours", cli["read"]), ("read_seconds_1m_pandas", cli["pandas_read"])]

    # 5: summary
    print("\n== summary ==\n")
    if summary:
        for line in markdown(["dataset", "MV acc ours / ck", "DS acc ours / ck", "DS 100 it acc ours / ck",
                              "ds-gold (8% gold) / best ck, on 92%", "MV speed", "DS speed", "DS 100 it speed"],
                             summary):
            print(line)
        print("\n(speed = crowd-kit seconds / ours; accuracy on all gold tasks unless noted)\n")
    if big:
        for line in markdown(["measure", "ours", "crowd-kit", "ratio", "target", ""], big):
            print(line)
        print("\n(ratio: crowd-kit / ours for seconds, ours / crowd-kit for memory)\n")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f}s")
    for name, value in bench:
        print(f"BENCH {name}={'nan' if value is None else f'{value:.6g}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
