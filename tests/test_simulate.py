"""`crowdmarket simulate`: a simulated crowd works a project through the HTTP API, in process on a temporary
SQLite database (with a simulated clock) or against a live server; the report is measured against the truth."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from base.identity import Role
from shell.cli import cli
from tests.factories import account


def simulate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["simulate", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def spammy() -> dict:
    """200 items of 3 classes, 10 workers, 4 of them answering at random (twice as fast as the honest ones, so
    they do more than their share), gold at 10%."""
    return simulate("--items", "200", "--workers", "10", "--classes", "3", "--gold-rate", "0.1",
                    "--mix", "honest=0.6,spammer=0.4", "--seed", "7")


def test_the_report_has_every_figure_with_its_type(spammy):
    assert set(spammy["accuracy"]) == {"mv", "ds", "ds_gold"}
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in spammy["accuracy"].values())
    assert isinstance(spammy["cost_per_item_cents"], float) and spammy["cost_per_item_cents"] > 0
    assert isinstance(spammy["flag_precision"], float) and isinstance(spammy["flag_recall"], float)
    wages = spammy["hourly_wage_cents"]
    assert {"min", "p10", "median", "target"} <= set(wages) and wages["min"] <= wages["p10"] <= wages["median"]
    assert spammy["books_balanced"] is True
    counts = spammy["counts"]
    assert counts["items"] == 200 and counts["gold_items"] == 20 and counts["workers"] == 10
    assert counts["workers_by_kind"] == {"honest": 6, "spammer": 4, "same": 0, "fast": 0, "colluder": 0}
    # Every real item got its answers (redundancy 3): the crowd worked the batch to the end.
    assert counts["tasks"] >= 600


def test_with_spammers_abounding_gold_anchored_ds_beats_majority_vote_and_spammers_are_caught(spammy):
    acc = spammy["accuracy"]
    assert acc["ds_gold"] >= acc["mv"]
    assert acc["ds_gold"] > acc["mv"] + 0.05
    assert spammy["flagged_by_kind"]["spammer"] / 4 > 0.5 and spammy["flagged_by_kind"]["honest"] == 0
    assert spammy["flag_recall"] > 0.5


def test_spend_is_what_the_approved_work_cost(spammy):
    """gold-pass rejects the spammers' work, so the spend is at most reward x approved tasks plus top-ups."""
    approved = spammy["counts"]["assignments_by_status"].get("approved", 0)
    assert 0 < approved < spammy["counts"]["tasks"]
    assert spammy["spend_cents"] >= 5 * approved


def test_a_seed_repeats_the_run():
    args = ("--items", "40", "--workers", "6", "--seed", "3", "--approve", "all")
    first, second = simulate(*args), simulate(*args)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert simulate("--items", "40", "--workers", "6", "--seed", "4", "--approve", "all")["counts"] != first["counts"]


def test_bad_options_are_usage_errors():
    runner = CliRunner()
    assert runner.invoke(cli, ["simulate", "--mix", "robot=1"]).exit_code == 2
    assert runner.invoke(cli, ["simulate", "--gold-rate", "0.5"]).exit_code == 2
    assert runner.invoke(cli, ["simulate", "--accuracy", "0.9-0.2"]).exit_code == 2
    assert runner.invoke(cli, ["simulate", "--url", "http://127.0.0.1:9"]).exit_code == 2


def test_over_http_against_a_live_server(app, session, clock, live_server):
    app.config["REDIS_URL"] = None  # aggregation runs inline: no job worker serves this live server
    _, token = account(session, Role.REQUESTER, now=clock())
    _, ops = account(session, Role.OPS, now=clock())
    report = simulate("--url", live_server, "--token", token, "--ops-token", ops, "--items", "20", "--workers", "4",
                      "--mix", "honest=1", "--accuracy", "0.9-1", "--approve", "all")
    assert report["counts"]["items"] == 20 and report["counts"]["tasks"] >= 60
    assert report["accuracy"]["mv"] >= 0.8 and report["books_balanced"] is True
    assert report["counts"]["assignments_by_status"] == {"approved": report["counts"]["tasks"]}
