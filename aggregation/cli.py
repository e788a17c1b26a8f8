"""`crowdmarket aggregate`: the offline aggregator, on the service's code path (`aggregation.engine`) with no app
or database. This module imports click alone: numpy, scipy and the readers load when the command runs, so `--help`
(and `crowdmarket --help`) stay quick. The choices and defaults below are spelled out for that reason; a test keeps
them equal to the engine's."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from aggregation.engine import Aggregate
    from aggregation.io import AnswerTable

METHODS = ("mv", "wmv", "ds", "ds-gold", "onecoin")
DUPLICATES = ("error", "first", "last", "all")
MAX_ITER, TOL, POSTERIOR_TOL = 100, 1e-6, 1e-5
PRIOR_CORRECT, PRIOR_WRONG, PRIOR_CLASSES = 0.5, 0.01, 1.0
# Inputs above this size get a progress bar (unless --quiet): smaller ones read in well under a second.
PROGRESS_BYTES = 5_000_000
ITERATIVE = ("ds", "ds-gold", "onecoin")


def _reason(exc: Exception) -> str:
    """An error's message without the path an OSError repeats."""
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)


def _check_out(out: str) -> None:
    """Refuse an output the run could not write, before the work rather than after it (click refuses a folder)."""
    if out == "-":
        return
    folder = Path(out).parent
    if not folder.is_dir():
        raise click.ClickException(f"cannot write {out}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.ClickException(f"cannot write {out}: {folder} is not writable")


def _inputs(answers_path: Path, gold_path: Path | None, duplicates: str,
            progress: bool) -> tuple[AnswerTable, Any, Any]:
    from aggregation import io as aggregation_io

    try:
        table = aggregation_io.read_answers(answers_path, progress=progress, duplicates=duplicates)
    except (aggregation_io.InputError, OSError) as exc:
        raise click.ClickException(f"{answers_path}: {_reason(exc)}") from None
    if gold_path is None:
        return table, None, None
    try:
        gold_items, gold_labels, table = aggregation_io.read_gold(gold_path, table)
    except (aggregation_io.InputError, OSError) as exc:
        raise click.ClickException(f"{gold_path}: {_reason(exc)}") from None
    return table, gold_items, gold_labels


def _summary(table: AnswerTable, result: Aggregate, method: str, duplicates: str, gold: tuple[Any, Any],
             seconds: float) -> str:
    summary = [f"{table.n_answers} answers", f"{table.n_tasks} tasks", f"{table.n_workers} workers",
               f"{table.n_classes} classes", f"method {method}"]
    if table.repeats:
        kept = {"first": "kept the first", "last": "kept the last", "all": "all counted"}[duplicates]
        summary.append(f"{table.repeats} repeated answer{'s' if table.repeats != 1 else ''} ({kept})")
    if method in ITERATIVE:
        n = result.result.iterations
        why = "converged" if result.result.stop_reason == "converged" else "stopped at --max-iter, not converged"
        summary.append(f"{n} iteration{'s' if n != 1 else ''} ({why})")
    gold_items, gold_labels = gold
    if gold_items is not None and gold_items.size and method != "ds-gold":
        hits = int((result.result.labels[gold_items] == gold_labels).sum())
        summary.append(f"gold agreement {hits}/{gold_items.size}")
    summary.append(f"{seconds:.2f} s")
    return ", ".join(summary)


@click.command("aggregate")
@click.option("--method", type=click.Choice(METHODS), required=True,
              help="mv: majority vote; wmv: weighted by worker accuracy; ds: Dawid–Skene; ds-gold: gold-anchored; "
                   "onecoin: one-coin Dawid–Skene.")
@click.option("--answers", "answers_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV with worker,task,label.")
@click.option("--gold", "gold_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with task,label of known answers (required by ds-gold).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Results file (task,label,confidence); - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Default: jsonl for a .jsonl/.ndjson --out, else csv.")
@click.option("--duplicates", type=click.Choice(DUPLICATES), default="error", show_default=True,
              help="A worker's repeated answers to a task: refuse the file, keep the first or the last, or count "
                   "all as votes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the tie-breaking RNG.")
@click.option("--max-iter", type=click.IntRange(min=1), default=MAX_ITER, show_default=True,
              help="Dawid–Skene: most EM iterations.")
@click.option("--tol", type=click.FloatRange(min=0), default=TOL, show_default=True,
              help="Dawid–Skene: converged when the log-likelihood per answer changes by less (0: never).")
@click.option("--posterior-tol", type=click.FloatRange(min=0), default=POSTERIOR_TOL, show_default=True,
              help="Dawid–Skene, second guard: converged when no posterior moves by more (0: never).")
@click.option("--prior-correct", type=click.FloatRange(min=0), default=PRIOR_CORRECT, show_default=True,
              help="Dawid–Skene's Dirichlet prior: pseudo-count on each confusion row's diagonal.")
@click.option("--prior-wrong", type=click.FloatRange(min=0, min_open=True), default=PRIOR_WRONG,
              show_default=True, help="… on each other entry of a confusion row.")
@click.option("--prior-classes", type=click.FloatRange(min=0, min_open=True), default=PRIOR_CLASSES,
              show_default=True, help="… on each class prior.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def aggregate_command(method: str, answers_path: Path, gold_path: Path | None, out: str, fmt: str | None,
                      duplicates: str, seed: int, max_iter: int, tol: float, posterior_tol: float,
                      prior_correct: float, prior_wrong: float, prior_classes: float, quiet: bool) -> None:
    """Aggregate crowd answers from CSV files offline, with the service's code path (no app or database)."""
    started = time.perf_counter()
    if method == "ds-gold" and gold_path is None:
        raise click.ClickException("--method ds-gold needs --gold: a task,label CSV of known answers.")
    _check_out(out)
    fmt = fmt or ("jsonl" if Path(out).suffix.lower() in (".jsonl", ".ndjson") else "csv")
    progress = not quiet and answers_path.stat().st_size > PROGRESS_BYTES
    table, gold_items, gold_labels = _inputs(answers_path, gold_path, duplicates, progress)
    if method == "ds-gold" and not gold_items.size:
        raise click.ClickException(f"{gold_path}: no gold rows; ds-gold needs at least one.")
    from aggregation import io as aggregation_io
    from aggregation.engine import aggregate
    from aggregation.methods import Prior

    try:
        result = aggregate(method, table.task_codes, table.worker_codes, table.label_codes, n_items=table.n_tasks,
                           n_workers=table.n_workers, n_classes=table.n_classes, gold_items=gold_items,
                           gold_labels=gold_labels, seed=seed, max_iter=max_iter, tol=tol,
                           posterior_tol=posterior_tol, prior=Prior(prior_correct, prior_wrong, prior_classes))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        aggregation_io.write_results(sys.stdout if out == "-" else out, table, result, fmt=fmt)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {_reason(exc)}") from None
    if not quiet:
        click.echo(_summary(table, result, method, duplicates, (gold_items, gold_labels),
                            time.perf_counter() - started), err=True)
