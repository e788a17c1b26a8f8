"""The `crowdmarket simulate` command (shell/simulate.py does the work): options, the run, the table or JSON."""

from __future__ import annotations

import json
import time
from typing import Any

import click

APPROVALS = ("all", "gold-pass", "auto")


def _mix(_ctx: click.Context, _param: click.Parameter, value: str) -> dict[str, float]:
    from shell.simulate import parse_mix

    try:
        return parse_mix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _range(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, float]:
    from shell.simulate import parse_range

    try:
        return parse_range(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("simulate")
@click.option("--items", type=click.IntRange(1, 1_000_000), default=2000, show_default=True)
@click.option("--classes", type=click.IntRange(2, 50), default=2, show_default=True)
@click.option("--redundancy", type=click.IntRange(1, 50), default=3, show_default=True, help="Answers per item.")
@click.option("--gold-rate", type=float, default=0.08, show_default=True, help="0, or 0.05-0.10 (the project's).")
@click.option("--reward-cents", type=click.IntRange(0), default=5, show_default=True, help="Per task.")
@click.option("--estimated-seconds", type=click.IntRange(1), default=20, show_default=True)
@click.option("--target-wage-cents", type=click.IntRange(0), default=1200, show_default=True,
              help="The project's target hourly wage (fair-wage top-ups).")
@click.option("--approve", type=click.Choice(APPROVALS), default="gold-pass", show_default=True,
              help="all: approve every task; gold-pass: reject the workers under --gold-pass-min on gold, approve "
                   "the rest; auto: the payments cycle's auto-approval (rejecting gold misses).")
@click.option("--gold-pass-min", type=click.FloatRange(0, 1), default=0.6, show_default=True)
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="The project's min_gold_accuracy, which the quality control judges by.")
@click.option("--workers", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--mix", callback=_mix, default="honest=0.6,spammer=0.1,same=0.1,fast=0.1,colluder=0.1",
              show_default=True, help="Shares of worker kinds: honest, spammer, same, fast, colluder.")
@click.option("--accuracy", callback=_range, default="0.7-0.95", show_default=True,
              help="Honest workers' accuracy range.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--url", default=None, help="Work through a running instance's HTTP API instead (its clock: wages "
                                          "are then not meaningful).")
@click.option("--token", default=None, help="With --url: a funded requester's API token.")
@click.option("--ops-token", default=None, help="With --url: an ops token, for the flags and the books' check.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def simulate_command(url: str | None, token: str | None, ops_token: str | None, as_json: bool,
                     **options: Any) -> None:
    """Simulate a crowd working a project end to end (on a fresh temporary database unless --url) and report
    label accuracy (MV, DS, gold-anchored DS), cost per item, flag precision/recall, wages and the books."""
    from shell.simulate import Settings, SimulationError, run_over_http
    from shell.simulate_local import run_in_process

    if not (options["gold_rate"] == 0 or 0.05 <= options["gold_rate"] <= 0.10):
        raise click.BadParameter("0, or between 0.05 and 0.10", param_hint="--gold-rate")
    if url and not token:
        raise click.UsageError("--url needs --token (a funded requester's API token).")
    settings = Settings(target_wage_cents=options.pop("target_wage_cents"), **options)
    started = time.perf_counter()
    try:
        result = run_over_http(settings, url, token, ops_token) if url else run_in_process(settings)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    result["seconds"] = round(time.perf_counter() - started, 1)
    click.echo(json.dumps(result, indent=2) if as_json else table(result))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(r: dict[str, Any]) -> str:
    """The human summary."""
    c, w, a = r["counts"], r["hourly_wage_cents"], r["accuracy"]
    rows = [
        ("items (+ gold)", f"{c['items']} (+{c['gold_items']})"),
        ("workers", ", ".join(f"{k} {n}" for k, n in c["workers_by_kind"].items() if n)),
        ("tasks submitted", c["tasks"]),
        ("assignments", ", ".join(f"{k} {n}" for k, n in sorted(c["assignments_by_status"].items()))),
        ("accuracy MV / DS / DS+gold", f"{a['mv']:.3f} / {a['ds']:.3f} / {a['ds_gold']:.3f}"),
        ("cost per item (cents)", _fmt(r["cost_per_item_cents"])),
        ("flag precision / recall", f"{_fmt(r['flag_precision'])} / {_fmt(r['flag_recall'])}"),
        ("flagged by kind", ", ".join(f"{k} {n}" for k, n in (r["flagged_by_kind"] or {}).items())),
        ("hourly wage c/h min / p10 / median", f"{_fmt(w['min'])} / {_fmt(w['p10'])} / {_fmt(w['median'])} "
                                               f"(target {w['target']})"),
        ("books balanced", _fmt(r["books_balanced"])),
        ("seconds", r["seconds"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
