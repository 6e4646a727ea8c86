"""`lottery reproduce`'s plan: which IMP runs and fine-tunes it asks for, and Table 1's choice of sparsity."""

from __future__ import annotations

from pathlib import Path

import pytest

from lottery.config import ConfigError, load_config
from lottery.study import plan
from lottery.study.config import ReproduceConfig

OUT = Path("/study")


def quick(*overrides: str) -> ReproduceConfig:
    return load_config("reproduce-quick", list(overrides), cls=ReproduceConfig)


def test_table1_takes_the_highest_sparsity_that_kept_99_percent_of_the_dense_round():
    rounds = {0.0: 0.80, 0.5: 0.799, 0.6: 0.70, 0.7: 0.795, 0.8: 0.60}
    choice = plan.choose(rounds, keep=0.99)
    assert (choice.sparsity, choice.kept) == (0.7, True)  # 0.795 >= 0.792; a dip at 60% does not stop it


def test_when_no_round_keeps_it_the_lowest_sparsity_is_taken_and_said():
    choice = plan.choose({0.0: 0.80, 0.5: 0.70, 0.6: 0.65}, keep=0.99)
    assert (choice.sparsity, choice.kept) == (0.5, False)


def test_choices_survive_the_file_the_workers_read(tmp_path):
    choices = {
        "vqa": plan.Choice(0.7, True, {0.0: 0.5, 0.7: 0.6}),
        "nlvr2": plan.Choice(0.5, False, {0.0: 0.6}),
    }
    plan.write_choices(tmp_path, choices)
    assert plan.read_choices(tmp_path) == choices
    assert plan.read_choices(tmp_path / "elsewhere") == {}


def test_every_imp_run_publishes_every_sparsity_of_the_schedule_into_the_studys_store():
    config = quick()
    universal = plan.imp_config(config, OUT, plan.PRETRAIN)
    assert universal.imp.objective == "pretrain"
    assert universal.imp.publish == {s: f"uniter-mini/pretrain/s{round(100 * s)}" for s in config.schedule}
    assert universal.imp.store == str(OUT / "tickets") and universal.runs_dir == str(OUT / "runs" / "imp")
    own = plan.imp_config(config, OUT, "nlvr2")
    assert own.imp.objective == "nlvr2" and own.imp.publish[0.7] == "uniter-mini/nlvr2/s70"
    # a task's rounds are fine-tunes at the study's fine-tune budget, on the same theta0
    assert own.imp.task_overrides == config.finetune_overrides
    assert own.theta0_overrides == universal.theta0_overrides


def test_before_table1_is_chosen_the_grid_is_dense_and_the_universal_tickets_on_every_seed():
    config = quick("seeds=[0, 1]")
    jobs = plan.finetune_jobs(config, OUT, {})
    tickets = {j.ticket for j in jobs}
    assert tickets == {"dense", *(f"uniter-mini/pretrain/s{p}" for p in (50, 60, 70, 80))}
    assert len(jobs) == len(config.tasks) * 2 * 5
    assert {j.train.seed for j in jobs} == {0, 1}
    assert all(j.runs_dir == str(OUT / "runs" / "finetune") and not j.save_model for j in jobs)
    assert all(j.store == str(OUT / "tickets") for j in jobs)


def test_table1_and_transfer_jobs_follow_the_choices_without_repeating_a_job():
    config = quick("seeds=[0, 1]", "transfer_seeds=1")
    choices = {t: plan.Choice(0.7 if t == "vqa" else 0.5, True, {}) for t in config.tasks}
    jobs = plan.finetune_jobs(config, OUT, choices)
    keys = [(j.task, j.ticket, j.init, j.train.seed) for j in jobs]
    assert len(keys) == len(set(keys))
    vqa = {(ticket, init) for task, ticket, init, _ in keys if task == "vqa"}
    assert {("uniter-mini/vqa/s70", i) for i in ("theta0", "bert", "shuffled")} <= vqa
    assert ("uniter-mini/random/s70", "theta0") in vqa
    # transfer: every task's 70% ticket (and the universal one) on every task, the first seed only
    transfer = [k for k in keys if k[1] == "uniter-mini/snli-ve/s70"]
    assert sorted(k[0] for k in transfer) == sorted(config.tasks) and {k[3] for k in transfer} == {0}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("schedule=[0.1, 0.2]", "lacks"),
        ("tasks=[vqa, nosuch]", "nosuch"),
        ("baselines=[magic]", "magic"),
        ("transfer_seeds=3", "transfer_seeds"),
        ("keep=1.5", "keep"),
    ],
)
def test_a_study_config_that_cannot_run_is_refused_naming_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        quick(override)


def test_the_default_study_covers_the_paper():
    config = load_config("reproduce-uniter-mini", [], cls=ReproduceConfig)
    assert len(config.tasks) == 7 and len(config.seeds) == 3 and len(config.theta0_seeds) == 3
    assert config.universal == (0.5, 0.6, 0.7, 0.8) and config.keep == 0.99
    assert set(config.baselines) == {"random", "bert", "shuffled"}


def test_config_show_resolves_a_study_config(capsys):
    from lottery.cli import main

    main(["config", "show", "--config", "reproduce-quick", "tasks=[vqa]"])
    import yaml

    shown = capsys.readouterr().out.splitlines()
    # the digest line is a YAML comment; DeepSpeed may print its accelerator line before it
    tree = yaml.safe_load("\n".join(line for line in shown if not line.startswith("[")))
    assert tree["tasks"] == ["vqa"] and tree["theta0_seeds"] == [0] and "universal" in tree
