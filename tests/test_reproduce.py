"""awd-reproduce: the pipelines' flags equal the examples' scripts, a tiny run of two pipelines prints the table,
a rerun resumes after the last finished stage, and a failing stage stops with one line naming it and its log."""

import json
import os
import re
import subprocess
import sys

import pytest

import awd_plugins  # noqa: F401
from awd_plugins.cli import pipelines, reproduce
from conftest import REPO
from test_recipe_scripts import _record

REQUIRED = ["awd-lstm-ptb", "awd-lstm-wt2", "awd-qrnn-ptb", "awd-qrnn-wt2", "sha-rnn-enwik8", "srupp-enwik8-base",
            "srupp-wt103-base", "word-lm-wt2"]


def test_list_names_every_pipeline(capsys):
    assert reproduce.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in REQUIRED:
        assert f"\n{name} " in "\n" + out


def test_bad_name_is_one_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["no-such-pipeline"])
    assert e.value.code == 2
    assert "unknown pipeline 'no-such-pipeline'" in capsys.readouterr().err


# -- the full-scale commands are those of examples/*.sh ---------------------------------------------------

IGNORED = {"--save-dir", "--restore-file", "--finetune-from-model", "--path", "--user-dir", "--log-format",
           "--log-interval", "--cpu", "--num-workers", "--force"}


def flags(argv):
    """``{flag: value}`` of a fairseq command line (paths and logging left out)."""
    out, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            if argv[i] not in IGNORED:
                out[argv[i]] = argv[i + 1] if has_value else True
            i += 2 if has_value else 1
        else:
            i += 1
    return out


SCRIPTS = {
    "awd-lstm-ptb": ("awd_lstm.sh", ["ptb"], {}), "awd-lstm-wt2": ("awd_lstm.sh", ["wt2"], {}),
    "awd-qrnn-ptb": ("awd_qrnn.sh", ["ptb"], {}), "awd-qrnn-wt2": ("awd_qrnn.sh", ["wt2"], {}),
    "sha-rnn-enwik8": ("sha_rnn_enwik8.sh", [], {}), "srupp-enwik8-base": ("srupp_enwik8.sh", [], {}),
    "srupp-wt103-base": ("srupp_wt103.sh", [], {}), "word-lm-wt2": ("word_language_model.sh", ["wt2-6"], {}),
    "awd-lstm-enwik8": ("awd_adam.sh", ["enwik8"], {}), "awd-lstm-ptb-char": ("awd_adam.sh", ["ptb-char"], {}),
    "awd-qrnn-wt103": ("awd_adam.sh", ["wt103"], {}),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_full_scale_commands_are_the_example_scripts(name, tmp_path):
    script, args, env = SCRIPTS[name]
    calls = _record(tmp_path, script, *args, env=env)
    pipe = pipelines.build(name, pipelines.Paths(str(tmp_path / "w"), None, "full", pipelines.build(
        name, pipelines.Paths("w", None, "full", 1)).gpus))
    ours = [s for s in pipe.stages if s.kind != "prepare" and not s.needs_task_option]
    assert [s.tool for s in ours] == [c[0] for c in calls]
    trains = [(s, c) for s, c in zip(ours, calls) if s.kind == "train"]
    for stage, call in trains:
        assert flags(stage.args) == flags(call[1:]), stage.name
    # evaluations: the same commands (the scripts order them differently)
    key = lambda d: sorted(d.items())  # noqa: E731
    assert sorted(key(flags(s.args)) for s in ours if s.kind == "eval") == \
        sorted(key(flags(c[1:])) for c in calls if c[0] == "fairseq-eval-lm")


# -- tiny runs ---------------------------------------------------------------------------------------------


def _reproduce(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "awd_plugins.cli.reproduce", *args, "--progress-every", "1000"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _mtimes(work):
    logs = os.path.join(work, "logs")
    return {f: os.path.getmtime(os.path.join(logs, f)) for f in os.listdir(logs)}


def test_tiny_word_lm_table_resume_and_failure(tmp_path):
    work = str(tmp_path / "run")
    proc = _reproduce("word-lm-wt2", "--scale", "tiny", "--work", work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "n/a at tiny scale" in proc.stdout and "eval test" in proc.stdout
    with open(os.path.join(work, "results.json")) as f:
        results = json.load(f)
    stages = {s["stage"]: s for s in results["stages"]}
    assert list(stages) == ["prepare", "train", "eval test"]
    assert stages["train"]["ours"] > 1 and stages["eval test"]["ours"] > 1 and stages["eval test"]["tokens_per_s"] > 0
    with open(os.path.join(work, "results.md")) as f:
        assert "| eval test | ppl | n/a at tiny scale |" in f.read()

    # a rerun finds every stage finished and runs nothing
    before = _mtimes(work)
    proc = _reproduce("word-lm-wt2", "--scale", "tiny", "--work", work)
    assert proc.returncode == 0 and proc.stdout.count("done earlier") == 3
    assert _mtimes(work) == before

    # interrupted before the last stage: only that one runs again, with the same result
    os.remove(os.path.join(work, "stages", "eval-test.json"))
    proc = _reproduce("word-lm-wt2", "--scale", "tiny", "--work", work)
    assert proc.returncode == 0 and proc.stdout.count("done earlier") == 2
    after = _mtimes(work)
    assert after["train.log"] == before["train.log"] and after["eval-test.log"] > before["eval-test.log"]
    with open(os.path.join(work, "results.json")) as f:
        assert json.load(f)["stages"][2]["ours"] == stages["eval test"]["ours"]

    # a stage that fails: one line naming the stage and its log, no traceback, no record
    os.remove(os.path.join(work, "stages", "eval-test.json"))
    os.remove(os.path.join(work, "checkpoints", "train", "checkpoint_best.pt"))
    proc = _reproduce("word-lm-wt2", "--scale", "tiny", "--work", work)
    log = os.path.join(work, "logs", "eval-test.log")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert re.fullmatch(rf"awd-reproduce: error: stage 'eval test' failed \(exit status [1-9]\d*\); its log: "
                        rf"{re.escape(log)}", line), line
    assert "Traceback" not in proc.stdout and not os.path.exists(os.path.join(work, "stages", "eval-test.json"))

    # another pipeline's settings in the same folder are refused
    proc = _reproduce("awd-lstm-ptb", "--scale", "tiny", "--work", work)
    assert proc.returncode == 2 and "holds a run with other settings" in proc.stderr


def test_tiny_awd_lstm_every_stage(tmp_path):
    work = str(tmp_path / "awd")
    proc = _reproduce("awd-lstm-ptb", "--scale", "tiny", "--work", work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(work, "results.json")) as f:
        stages = {s["stage"]: s for s in json.load(f)["stages"]}
    assert list(stages) == [s.name for s in pipelines.build("awd-lstm-ptb", pipelines.Paths(work, None, "tiny", 0)).stages]
    # finetuning never returns a worse model than the one it starts from (rounding of the logged figures aside)
    assert stages["finetune"]["ours"] <= stages["train"]["ours"] * 1.001
    for name in ("eval valid", "eval test", "eval valid + pointer", "eval test + pointer"):
        assert stages[name]["status"] == "done" and stages[name]["ours"] > 1
    for name in ("eval valid + dynamic", "eval test + dynamic"):
        if reproduce.task_has_option("dynamic_eval"):
            assert stages[name]["status"] == "done" and stages[name]["ours"] > 1
        else:
            assert stages[name]["status"] == "skipped" and "not available" in stages[name]["note"]
            assert "not available (the task has no --dynamic-eval)" in proc.stdout


def test_demo_is_a_fixed_amount_of_work_at_every_scale():
    demo = {scale: pipelines.build("demo", pipelines.Paths("w", None, scale, 0)) for scale in ("tiny", "full")}
    assert [s.args for s in demo["tiny"].stages] == [s.args for s in demo["full"].stages]
    train = next(s for s in demo["tiny"].stages if s.kind == "train").args
    assert "--max-epoch" in train and "--stop-time-hours" not in train and "--max-update" not in train
    assert demo["tiny"].fixed and demo["tiny"].gpus == 0
