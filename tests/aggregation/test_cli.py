"""`crowdmarket aggregate`: CSV files in, results out, through aggregation.engine, with no app or database."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import aggregation.cli
from aggregation import csvfile, engine
from aggregation import io as aggregation_io
from aggregation.io import InputError, read_answers, read_gold
from shell.cli import cli

# Three workers; t1 and t3 split 2:1, t2 is unanimous. Every method agrees with the majority here.
ANSWERS = """worker,task,label
w1,t1,cat
w2,t1,cat
w3,t1,dog
w1,t2,dog
w2,t2,dog
w3,t2,dog
w1,t3,bird
w2,t3,cat
w3,t3,cat
w1,t4,bird
w2,t4,bird
w3,t4,bird
"""


def _no_app():
    raise AssertionError("crowdmarket aggregate must not create the app")


def invoke(*args: str):
    return CliRunner().invoke(cli, ["aggregate", *args], obj=_no_app)


def write(path, text: str):
    path.write_text(text, encoding="utf-8", newline="")
    return path


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def labels_of(path) -> dict[str, str]:
    return {row["task"]: row["label"] for row in rows(path)}


def assert_failed(result, message: str, tmp_path) -> None:
    """exit code 1, the message, no traceback, and nothing written (not even a temporary file)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]


@pytest.mark.parametrize("method", ["mv", "wmv", "ds", "ds-gold"])
def test_each_method_end_to_end(tmp_path, method):
    answers = write(tmp_path / "answers.csv", ANSWERS)
    gold = write(tmp_path / "gold.csv", "task,label\nt2,dog\n")
    out = tmp_path / "out.csv"
    result = invoke("--method", method, "--answers", str(answers), "--gold", str(gold), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "12 answers, 4 tasks, 3 workers, 3 classes" in result.stderr and f"method {method}" in result.stderr
    got = rows(out)
    assert list(got[0]) == ["task", "label", "confidence"]
    assert [(r["task"], r["label"]) for r in got] == [("t1", "cat"), ("t2", "dog"), ("t3", "cat"), ("t4", "bird")]
    confidence = {r["task"]: float(r["confidence"]) for r in got}
    assert all(0 < c <= 1 for c in confidence.values())
    assert confidence["t2"] == pytest.approx(1.0, abs=1e-3)
    if method == "mv":
        assert [r["confidence"] for r in got] == ["0.666667", "1", "0.666667", "1"]


def test_columns_in_any_order_extra_columns_ignored_stdout(tmp_path):
    answers = write(tmp_path / "answers.csv", "\ufefflabel,when,Task,worker\r\ncat,1,a,x\r\ndog,2,a,y\r\n\r\n"
                                              "cat,3,a,z\r\ndog,4,b,x\r\n")
    result = invoke("--method", "mv", "--answers", str(answers), "--out", "-", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == "task,label,confidence\na,cat,0.666667\nb,dog,1\n"
    assert result.stderr == ""


def test_quoted_names_round_trip(tmp_path):
    tricky = ['task, with comma', 'say "hi"', 'two\nlines', 'plain']
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["worker", "task", "label"])
    for task in tricky:
        writer.writerows([["w1", task, "a,b"], ["w2", task, 'q"uote'], ["w3", task, "a,b"]])
    answers = write(tmp_path / "answers.csv", buffer.getvalue())
    out = tmp_path / "out.csv"
    result = invoke("--method", "mv", "--answers", str(answers), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [(r["task"], r["label"]) for r in rows(out)] == [(task, "a,b") for task in tricky]
    text = out.read_text(encoding="utf-8")
    assert '"task, with comma","a,b",0.666667\n' in text and '"say ""hi""",' in text and '"two\nlines",' in text


def test_names_that_look_like_formulas_are_written_as_read(tmp_path):
    """Unlike the app's exports, the offline aggregator writes task and label names as its input has them: they
    are the user's own file's, which holds the same cells, and the output must join back to it."""
    answers = write(tmp_path / "answers.csv", "worker,task,label\nw1,=SUM(A1),-x\nw2,=SUM(A1),-x\nw1,@t,+y\n")
    out = tmp_path / "out.csv"
    assert invoke("--method", "mv", "--answers", str(answers), "--out", str(out)).exit_code == 0
    assert [(r["task"], r["label"]) for r in rows(out)] == [("=SUM(A1)", "-x"), ("@t", "+y")]


def test_jsonl_output(tmp_path):
    answers = write(tmp_path / "answers.csv", ANSWERS.replace("t1", 'the "first"').replace("cat", "chat\u00e9"))
    for out, extra in ((tmp_path / "out.jsonl", []), (tmp_path / "out.txt", ["--format", "jsonl"])):
        result = invoke("--method", "mv", "--answers", str(answers), "--out", str(out), *extra)
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert records[0] == {"task": 'the "first"', "label": "chat\u00e9", "confidence": pytest.approx(2 / 3)}
        assert [r["task"] for r in records] == ['the "first"', "t2", "t3", "t4"]
        assert records[1]["confidence"] == 1


# Gold tasks g1..g8: worker `good` answers the truth, `bad1` and `bad2` answer the other label, so they outvote
# `good` everywhere. On the non-gold task `open`, too, the two outvote `good`, unless gold tells them apart.
GOLD_TRUTH = ["cat", "dog", "cat", "dog", "cat", "dog", "cat", "dog"]
FLIP = {"cat": "dog", "dog": "cat"}
GOLD_ANSWERS = "worker,task,label\n" + "".join(
    f"good,g{i},{truth}\nbad1,g{i},{FLIP[truth]}\nbad2,g{i},{FLIP[truth]}\n" for i, truth in enumerate(GOLD_TRUTH)
) + "good,open,cat\nbad1,open,dog\nbad2,open,dog\n"
GOLD = "task,label\n" + "".join(f"g{i},{truth}\n" for i, truth in enumerate(GOLD_TRUTH))


def test_ds_gold_keeps_gold_labels(tmp_path):
    answers, gold = write(tmp_path / "answers.csv", GOLD_ANSWERS), write(tmp_path / "gold.csv", GOLD)
    out = tmp_path / "out.csv"
    result = invoke("--method", "ds-gold", "--answers", str(answers), "--gold", str(gold), "--out", str(out))
    assert result.exit_code == 0, result.output
    got = {r["task"]: (r["label"], r["confidence"]) for r in rows(out)}
    assert all(got[f"g{i}"] == (truth, "1") for i, truth in enumerate(GOLD_TRUTH))
    assert got["open"][0] == "cat"  # gold showed the pair answer the opposite of the truth


def test_gold_changes_wmv_weights(tmp_path):
    answers, gold = write(tmp_path / "answers.csv", GOLD_ANSWERS), write(tmp_path / "gold.csv", GOLD)
    out = tmp_path / "out.csv"
    assert invoke("--method", "wmv", "--answers", str(answers), "--out", str(out)).exit_code == 0
    assert labels_of(out)["open"] == "dog"  # without gold the pair agree with the majority: they weigh most
    result = invoke("--method", "wmv", "--answers", str(answers), "--gold", str(gold), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert labels_of(out)["open"] == "cat"
    assert "gold agreement 8/8" in result.stderr


def test_gold_only_label_becomes_a_class(tmp_path):
    answers = write(tmp_path / "answers.csv", ANSWERS)
    gold = write(tmp_path / "gold.csv", "label,task\nfish,t3\n")
    table = read_answers(answers)
    gold_items, gold_labels, extended = read_gold(gold, table)
    assert table.labels == ["cat", "dog", "bird"] and extended.labels == ["cat", "dog", "bird", "fish"]
    assert gold_items.tolist() == [2] and gold_labels.tolist() == [3] and gold_labels.dtype == np.int64
    assert read_gold(write(tmp_path / "same.csv", "task,label\nt3,cat\n"), table).table is table
    out = tmp_path / "out.csv"
    result = invoke("--method", "ds-gold", "--answers", str(answers), "--gold", str(gold), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "4 classes" in result.stderr
    assert labels_of(out)["t3"] == "fish"


@pytest.mark.parametrize(("answers", "gold", "args", "message"), [
    ("worker,task,answer\nw1,t1,a\n", None, [], "line 1: the header lacks column(s) label"),
    ("worker,task,label\nw1,t1,a\nw2,t1,a\n\nw1,t1,b\n", None, [],
     "line 5: worker 'w1' answered task 't1' again (first on line 2)"),
    ("", None, [], "empty file: expected a header naming worker, task, label"),
    ("\n\n", None, [], "empty file"),
    ("worker,task,label\n", None, [], "no answers"),
    ('worker,task,label\nw1,"t\n1",a\nw2,t2\n', None, [], "line 4: 2 field(s) where the header has 3"),
    ("worker,task,label\nw1,t1,a\nw2, ,a\n", None, [], "line 3: empty task"),
    (ANSWERS, "task,label\nt1,cat\nnope,dog\nt2,dog\nzip,cat\n", [],
     "2 gold task(s) have no answers: 'nope' (line 3), 'zip' (line 5)"),
    (ANSWERS, "task,label\nt1,cat\nt1,cat\n", [], "line 3: task 't1' is listed again (first on line 2)"),
    (ANSWERS, "task\nt1\n", [], "the header lacks column(s) label"),
    (ANSWERS, "task,label\n", ["--method", "ds-gold"], "no gold rows"),
    (ANSWERS, None, ["--method", "ds-gold"], "--method ds-gold needs --gold"),
])
def test_input_errors(tmp_path, answers, gold, args, message):
    paths = ["--answers", str(write(tmp_path / "answers.csv", answers))]
    if gold is not None:
        paths += ["--gold", str(write(tmp_path / "gold.csv", gold))]
    result = invoke(*(args or ["--method", "wmv"]), *paths, "--out", str(tmp_path / "out.csv"))
    assert_failed(result, message, tmp_path)


def test_an_error_keeps_an_existing_output(tmp_path):
    out = write(tmp_path / "out.csv", "previous results\n")
    answers = write(tmp_path / "answers.csv", "worker,task,label\nw1,t1,a\nw1,t1,b\n")
    result = invoke("--method", "mv", "--answers", str(answers), "--out", str(out))
    assert result.exit_code == 1 and "line 3: worker 'w1' answered task 't1' again" in result.stderr
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv", "out.csv"]


def test_read_errors_name_the_line():
    with pytest.raises(InputError, match=r"line 3: not UTF-8"):
        read_answers(io.BytesIO(b"worker,task,label\nw,t,a\nw,t2,\xff\n"))
    with pytest.raises(InputError, match=r"line 2: .*"):
        read_answers(io.BytesIO(b'worker,task,label\nw,"t"x,a\n'), progress=True)
    with pytest.raises(InputError, match="more than once"):
        read_answers(io.StringIO("worker,task,label,Task\nw,t,a,t\n"))


PLAIN = "worker,task,label\nw1,t1,a\nw2,t1,b\nw1,t2,b\nw3,t3,c\nw2,t3,c\n"


def table_tuple(table) -> tuple:
    return (table.tasks, table.workers, table.labels, table.task_codes.tolist(), table.worker_codes.tolist(),
            table.label_codes.tolist())


@pytest.mark.parametrize("block_bytes", [1, 12, csvfile.BLOCK_BYTES])
@pytest.mark.parametrize("variant", [
    PLAIN.replace("\n", "\r\n"),  # CRLF: normalised, then the fast path
    PLAIN.rstrip("\n"),  # no final newline
    PLAIN + "\n\n",  # trailing blank lines
    PLAIN.replace("w2,t1", '"w2",t1'),  # a quote: the csv path
    PLAIN.replace("\nw1,t2", "\n\nw1,t2"),  # a blank line inside: the csv path
    "\n" + PLAIN,  # a blank line first: the csv path
])
def test_fast_and_csv_paths_read_alike(monkeypatch, variant, block_bytes):
    expected = table_tuple(read_answers(io.StringIO(PLAIN)))
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", block_bytes)
    assert table_tuple(read_answers(io.StringIO(variant))) == expected
    broken = variant.replace("w3,t3,c", "w3,t3")
    line = broken[:broken.index("w3,t3")].count("\n") + 1
    with pytest.raises(InputError, match=rf"^line {line}: 2 field\(s\) where the header has 3$"):
        read_answers(io.StringIO(broken))
    repeated = variant.replace("w2,t3,c", "w1,t1,c")
    line = repeated[:repeated.index("w1,t1,c")].count("\n") + 1
    with pytest.raises(InputError, match=rf"^line {line}: worker 'w1' answered task 't1' again \(first on line "):
        read_answers(io.StringIO(repeated))


def test_whitespace_around_values_is_not_part_of_them():
    table = read_answers(io.StringIO("worker,task,label\nw1,t1,cat\nw2, t1 ,cat \n w1 ,t2,dog\n"))
    assert (table.tasks, table.workers, table.labels) == (["t1", "t2"], ["w1", "w2"], ["cat", "dog"])
    assert table.task_codes.tolist() == [0, 0, 1] and table.worker_codes.tolist() == [0, 1, 0]
    assert table.label_codes.tolist() == [0, 0, 1] and table.task_codes.dtype == np.int32
    with pytest.raises(InputError, match=r"line 3: worker 'w1' answered task 't1' again \(first on line 2\)"):
        read_answers(io.StringIO("worker,task,label\nw1,t1,cat\n w1,t1 ,dog\n"))


def test_progress_bar_for_large_inputs(tmp_path, monkeypatch):
    answers = write(tmp_path / "answers.csv", ANSWERS)
    out = str(tmp_path / "out.csv")
    assert "reading answers.csv" not in invoke("--method", "mv", "--answers", str(answers), "--out", out).stderr
    monkeypatch.setattr(aggregation.cli, "PROGRESS_BYTES", 10)
    result = invoke("--method", "mv", "--answers", str(answers), "--out", out)
    assert result.exit_code == 0 and "reading answers.csv" in result.stderr
    quiet = invoke("--method", "mv", "--answers", str(answers), "--out", out, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_cli_methods_are_the_engines():
    assert aggregation.cli.METHODS == engine.METHODS


@pytest.mark.parametrize("method", ["mv", "wmv", "ds", "ds-gold"])
def test_same_code_path_as_the_engine(tmp_path, method):
    """The CLI's output is what aggregation.engine.aggregate gives for the same answers, factorised here by hand."""
    rng = np.random.default_rng(7)
    n_tasks, n_workers, names = 150, 12, ["yes", "no", "maybe"]
    truth = rng.integers(0, 3, n_tasks)
    skill = rng.uniform(0.4, 0.95, n_workers)
    lines, gold_lines = ["worker,task,label"], ["task,label"]
    for task in rng.permutation(n_tasks):
        for worker in rng.choice(n_workers, 4, replace=False):
            label = truth[task] if rng.random() < skill[worker] else rng.integers(0, 3)
            lines.append(f"w{worker},task {task},{names[label]}")
        if task % 10 == 0:
            gold_lines.append(f"task {task},{names[truth[task]]}")
    answers = write(tmp_path / "answers.csv", "\n".join(lines) + "\n")
    gold = write(tmp_path / "gold.csv", "\n".join(gold_lines) + "\n")
    out = tmp_path / "out.csv"
    args = ["--method", method, "--answers", str(answers), "--gold", str(gold), "--out", str(out)]
    result = invoke(*args, "--seed", "3", "--max-iter", "50", "--tol", "1e-6")
    assert result.exit_code == 0, result.output

    codes: dict[str, dict[str, int]] = {"worker": {}, "task": {}, "label": {}}
    answered = [[codes[column].setdefault(value, len(codes[column])) for column, value in zip(codes, line.split(","),
                                                                                              strict=True)]
                for line in lines[1:]]
    workers, tasks, labels = np.array(answered).T
    gold_pairs = [line.split(",") for line in gold_lines[1:]]
    direct = engine.aggregate(method, tasks, workers, labels, n_items=len(codes["task"]),
                              n_workers=len(codes["worker"]), n_classes=len(codes["label"]),
                              gold_items=[codes["task"][t] for t, _ in gold_pairs],
                              gold_labels=[codes["label"][lab] for _, lab in gold_pairs], seed=3, max_iter=50,
                              tol=1e-6)
    label_names, task_names = list(codes["label"]), list(codes["task"])
    expected = [(task_names[i], label_names[c], f"{p:.6g}")
                for i, (c, p) in enumerate(zip(direct.result.labels, direct.result.confidence, strict=True))]
    assert [(r["task"], r["label"], r["confidence"]) for r in rows(out)] == expected


def test_write_results_to_a_stream_and_unlabelled_tasks():
    table = read_answers(io.StringIO("worker,task,label\nw1,a,x\nw1,b,y\n"))
    result = engine.aggregate("mv", table.task_codes, table.worker_codes, table.label_codes, n_items=table.n_tasks,
                              n_workers=table.n_workers, n_classes=table.n_classes)
    unlabelled = engine.Aggregate("mv", type(result.result)(np.array([0, -1], np.int32), np.array([0.5, 0.0]),
                                                            result.result.posteriors),
                                  result.worker_accuracy, result.worker_answers, result.gold_items, result.gold_labels)
    for fmt, expected in (("csv", "task,label,confidence\na,x,0.5\nb,,0\n"),
                          ("jsonl", '{"task": "a", "label": "x", "confidence": 0.5}\n'
                                    '{"task": "b", "label": null, "confidence": 0}\n')):
        stream = io.StringIO()
        aggregation_io.write_results(stream, table, unlabelled, fmt=fmt)
        assert stream.getvalue() == expected


REPEATED = "worker,task,label\nw1,t1,cat\nw2,t1,dog\nw3,t1,dog\nw1,t2,dog\nw1,t1,dog\nw2,t2,dog\nw1,t1,dog\n"


@pytest.mark.parametrize(("duplicates", "t1"), [("first", ("dog", "0.666667")), ("last", ("dog", "1")),
                                                ("all", ("dog", "0.8"))])
def test_duplicates_choose_which_repeated_answers_count(tmp_path, duplicates, t1):
    """w1 answers t1 cat, then dog twice; w2 and w3 say dog. first keeps w1's cat (dog 2 of 3 votes), last keeps
    w1's dog (3 of 3), all counts every answer (dog 4 of 5)."""
    answers = write(tmp_path / "answers.csv", REPEATED)
    result = invoke("--method", "mv", "--answers", str(answers), "--out", "-", "--duplicates", duplicates)
    assert result.exit_code == 0, result.output
    got = {row["task"]: (row["label"], row["confidence"]) for row in csv.DictReader(io.StringIO(result.stdout))}
    assert got["t1"] == t1 and got["t2"] == ("dog", "1")
    kept = {"first": "kept the first", "last": "kept the last", "all": "all counted"}[duplicates]
    assert f"2 repeated answers ({kept})" in result.stderr
    answered = {"first": 5, "last": 5, "all": 7}[duplicates]
    assert f"{answered} answers, 2 tasks, 3 workers" in result.stderr


def test_repeated_answers_are_refused_by_default_naming_how_many(tmp_path):
    answers = write(tmp_path / "answers.csv", REPEATED)
    result = invoke("--method", "mv", "--answers", str(answers), "--out", str(tmp_path / "out.csv"))
    assert_failed(result, "line 6: worker 'w1' answered task 't1' again (first on line 2); line 8: worker 'w1' "
                          "answered task 't1' again (first on line 2): 2 repeated answers of 7 (29%)", tmp_path)
    assert "--duplicates first or last keeps one of them, all counts every one" in result.stderr


def with_repeats(path, target, share: float = 0.03, seed: int = 5) -> tuple[int, int]:
    """Copy a dataset's answers.csv to `target`, appending `share` of its rows again, each with another label
    (so which one counts matters); returns (answers, repeats)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = sorted({row["label"] for row in rows})
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=round(share * len(rows)), replace=False)
    again = [{**rows[i], "label": labels[(labels.index(rows[i]["label"]) + 1) % len(labels)]} for i in picked]
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["worker", "task", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + again)
    replaced = {(r["worker"], r["task"]): r for r in again}
    with open(target.with_name("replaced.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["worker", "task", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(replaced.get((r["worker"], r["task"]), r) for r in rows)
    return len(rows) + len(again), len(again)


def test_a_real_dataset_with_three_percent_repeats(datasets, tmp_path):
    """The shared dog dataset (Zhou et al. 2012; its published crowd file repeats about 3% of its answers, which
    the shared copy dropped) with 3% of its answers repeated under another label: refused by default, naming
    the count; `first` gives the original file's labels, `last` those of the file with the repeats' labels in
    place of the originals, `all` runs."""
    source = datasets / "dog" / "answers.csv"
    if not source.is_file():
        pytest.skip("the shared dog dataset is not here")
    total, repeats = with_repeats(source, tmp_path / "answers.csv")
    out = tmp_path / "out.csv"
    refused = invoke("--method", "ds", "--answers", str(tmp_path / "answers.csv"), "--out", str(out))
    assert_failed(refused, f": {repeats} repeated answers of {total} (2.9%)", tmp_path)

    def labels(answers, *extra):
        result = invoke("--method", "ds", "--answers", str(answers), "--out", str(out), "--quiet", *extra)
        assert result.exit_code == 0, result.output
        return labels_of(out)

    assert labels(tmp_path / "answers.csv", "--duplicates", "first") == labels(source)
    assert labels(tmp_path / "answers.csv", "--duplicates", "last") == labels(tmp_path / "replaced.csv")
    assert labels(tmp_path / "answers.csv", "--duplicates", "all").keys() == labels(source).keys()


def test_a_missing_output_folder_is_reported_before_the_work(tmp_path):
    """The output is checked first: here the answers are bad too, and it is the output the error names."""
    answers = write(tmp_path / "answers.csv", "worker,task,label\nw1,t1,a\nw1,t1,b\n")
    out = tmp_path / "missing" / "out.csv"
    result = invoke("--method", "mv", "--answers", str(answers), "--out", str(out))
    assert result.exit_code == 1 and f"cannot write {out}: {out.parent} is not a directory" in result.stderr
    assert "answered task" not in result.stderr
    folder = invoke("--method", "mv", "--answers", str(answers), "--out", str(tmp_path))
    assert folder.exit_code == 2 and "is a directory" in folder.stderr


def test_summary_says_why_dawid_skene_stopped(tmp_path):
    answers = write(tmp_path / "answers.csv", ANSWERS)
    for extra, why in (([], "(converged)"), (["--max-iter", "1"], "1 iteration (stopped at --max-iter, not "
                                                                   "converged)")):
        result = invoke("--method", "ds", "--answers", str(answers), "--out", "-", *extra)
        assert result.exit_code == 0 and why in result.stderr, result.stderr


def test_the_prior_options_reach_the_engine(tmp_path):
    """The isolated-worker case of test_reference.py: under the default prior worker w2's lone answer decides
    t3; under a flat prior of 0.01 the class prior overrules it."""
    answers = write(tmp_path / "answers.csv", "worker,task,label\nw1,t1,b\nw1,t2,b\nw2,t3,a\n")
    default = invoke("--method", "ds", "--answers", str(answers), "--out", "-", "--quiet")
    flat = invoke("--method", "ds", "--answers", str(answers), "--out", "-", "--quiet", "--prior-correct", "0.01",
                  "--prior-wrong", "0.01", "--prior-classes", "0.01")
    assert default.exit_code == flat.exit_code == 0
    assert default.stdout.splitlines()[3].startswith("t3,a,") and flat.stdout.splitlines()[3].startswith("t3,b,")
    bad = invoke("--method", "ds", "--answers", str(answers), "--out", "-", "--prior-wrong", "0")
    assert bad.exit_code == 2 and "--prior-wrong" in bad.stderr


def test_cli_choices_and_defaults_are_the_engines():
    from aggregation import methods

    cli_module = aggregation.cli
    assert cli_module.DUPLICATES == aggregation_io.DUPLICATES
    assert (cli_module.MAX_ITER, cli_module.TOL, cli_module.POSTERIOR_TOL) == (methods.MAX_ITER, methods.TOL,
                                                                             methods.POSTERIOR_TOL)
    assert methods.Prior(cli_module.PRIOR_CORRECT, cli_module.PRIOR_WRONG, cli_module.PRIOR_CLASSES) == \
        methods.DEFAULT_PRIOR


def imported_after(code: str) -> list[str]:
    """Which heavy packages a fresh interpreter has imported after running `code`."""
    probe = (f"import sys\n{code}\nprint('LOADED', *sorted(m for m in ('flask', 'sqlalchemy', 'numpy', 'scipy', "
             "'werkzeug', 'shell.app') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


RUN_MAIN = "from shell.cli import main\nsys.argv = {argv!r}\ntry:\n    main()\nexcept SystemExit:\n    pass"


def test_the_offline_aggregator_imports_only_what_it_uses(tmp_path):
    """`crowdmarket --help` and `crowdmarket aggregate --help` load click alone; an aggregation loads numpy and
    scipy, never the web app, Flask or SQLAlchemy."""
    assert imported_after(RUN_MAIN.format(argv=["crowdmarket", "--help"])) == []
    assert imported_after(RUN_MAIN.format(argv=["crowdmarket", "aggregate", "--help"])) == []
    answers = write(tmp_path / "answers.csv", ANSWERS)
    argv = ["crowdmarket", "aggregate", "--method", "ds", "--answers", str(answers), "--out", str(tmp_path / "o")]
    assert imported_after(RUN_MAIN.format(argv=argv)) == ["numpy", "scipy"]
    assert (tmp_path / "o").is_file()


def test_the_fast_reader_keys_fields_of_any_length_exactly(monkeypatch):
    """Names that share long prefixes, differ only past 7 or 8 bytes, or in length alone (`ab` and `ab\\0`), and
    multi-byte UTF-8: the numpy reader (keys of 7 bytes, hashes beyond) numbers them exactly as the csv module's
    path does, and so does its fallback for a hash collision."""
    rng = random.Random(11)
    names = sorted({"".join(rng.choices("abé\0", k=rng.randint(1, 20))) for _ in range(400)} | {
        "abcdefg", "abcdefgh", "abcdefghi", "abcdefgh\0", "ab", "ab\0"})
    rows = [rng.choices(names, k=3) for _ in range(2000)]
    text = "worker,task,label\n" + "".join(f"{w},{t},{lab}\n" for w, t, lab in rows)
    expected = table_tuple(read_answers(io.StringIO(text.replace("worker", '"worker"', 1)), duplicates="all"))
    assert table_tuple(read_answers(io.StringIO(text), duplicates="all")) == expected
    monkeypatch.setattr(csvfile, "_factorise", lambda *args: None)
    assert table_tuple(read_answers(io.StringIO(text), duplicates="all")) == expected
    with pytest.raises(InputError, match="^line 3: not UTF-8"):
        read_answers(io.BytesIO(b"worker,task,label\nw,t,a\nw2,t\xff\xfe long task name,b\n"))
