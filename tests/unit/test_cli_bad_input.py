"""Every user error of the `lottery` command is one line on stderr and exit code 2, found before any
process group, theta0 or engine exists (issue 22, items 4 and 5): one test per bad input a new user hit.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_runner import run_cli

import lottery
from lottery import cli_commands

run = run_cli


def one_line_exit_2(capsys, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def nothing_starts(monkeypatch):
    """Any job function called after the checks fails the test: the error must come before it."""
    for name in ("pretrain", "theta0", "imp", "finetune", "sweep", "pipeline", "reproduce"):
        monkeypatch.setattr(cli_commands, name, lambda args, name=name: pytest.fail(f"{name} started"))


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("pretrain", "train.zero_stage=7"), "train.zero_stage: 7 is not one of 0, 1, 2, 3"),
        (("imp", "imp.method=magic"), "imp.method: 'magic' is not one of imp, oneshot, random"),
        (("pretrain", "train.steps=-5"), "train.steps: -5 must be >= 1"),
        (
            ("pretrain", "tasks.mix={itm: 1, nsp: 1}"),
            "tasks.mix: 'nsp' is not one of itm, mlm, mrfr, mrckl, obj",
        ),
        (("finetune", "--task", "vqa", "optim.lr=-1"), "optim.lr: -1.0 must be > 0"),
        (("finetune", "--task", "vqa", "init_seed=x"), "init_seed"),
        (("pipeline", "workers=-1"), "workers: -1 must be >= 0"),
        (("pretrain", "data.min_objects=5", "data.max_objects=2"), "min_objects=5 must be <= max_objects=2"),
    ],
)
def test_a_nonsense_value_is_one_line_naming_the_key_and_what_is_allowed(capsys, nothing_starts, argv, named):
    line = one_line_exit_2(capsys, *argv)
    assert line.startswith("lottery: config error: ") and named in line


def test_a_nested_override_list_is_checked_before_the_first_stage(capsys, nothing_starts):
    """A pipeline's IMP overrides name a theta0 override: its bad key fails now, not an hour in."""
    line = one_line_exit_2(capsys, "pipeline", "imp_overrides=['theta0_overrides=[train.stepz=3]']")
    assert "train.stepz" in line


def test_an_override_that_is_not_yaml_is_one_line(capsys, nothing_starts):
    line = one_line_exit_2(capsys, "pretrain", "train.steps=[1,2")
    assert "override 'train.steps=[1,2': the value is not valid YAML" in line


def test_a_malformed_yaml_file_is_one_line_naming_the_file_and_the_line(capsys, nothing_starts, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 3\n  batch_size: [4\n")
    line = one_line_exit_2(capsys, "pretrain", "--config", str(bad))
    assert f"{bad}: not valid YAML" in line and "line " in line


def test_a_yaml_file_that_is_not_a_mapping_is_one_line(capsys, nothing_starts, tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert f"{bad}: top level must be a mapping" in one_line_exit_2(capsys, "imp", "--config", str(bad))


def test_report_of_a_missing_directory_is_one_line_naming_it(capsys, tmp_path):
    line = one_line_exit_2(capsys, "report", str(tmp_path / "no-runs"), "--out", str(tmp_path / "out"))
    assert f"{tmp_path / 'no-runs'}: does not exist" in line
    assert not (tmp_path / "out").exists()


def test_report_of_a_directory_without_results_is_one_line(capsys, tmp_path):
    line = one_line_exit_2(capsys, "report", str(tmp_path), "--out", str(tmp_path / "out"))
    assert "no fine-tune results" in line


def test_eval_of_a_missing_model_directory_is_one_line_naming_it(capsys, tmp_path):
    line = one_line_exit_2(capsys, "eval", "--model", str(tmp_path / "nomodel"), "--data", str(tmp_path))
    assert f"eval --model {tmp_path / 'nomodel'}: does not exist" in line


def test_eval_of_a_directory_without_weights_is_one_line_naming_what_is_missing(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    line = one_line_exit_2(capsys, "eval", "--model", str(tmp_path), "--data", str(tmp_path))
    assert "no model.safetensors, so not a model directory" in line


def test_a_mistyped_ticket_alias_is_refused_before_the_process_group(capsys, nothing_starts, tmp_path):
    line = one_line_exit_2(capsys, "finetune", "--task", "vqa", "--ticket", "s6O", "--store", str(tmp_path))
    assert line.startswith("lottery: ticket refused: ticket=s6O") and "no ticket 's6O'" in line


def test_an_unknown_task_is_a_usage_error_listing_the_tasks(capsys):
    line = one_line_exit_2(capsys, "finetune", "--task", "nosuch")
    assert "invalid choice: 'nosuch'" in line and "'refcoco+'" in line


def test_a_missing_bert_folder_is_named_before_anything_trains(capsys, nothing_starts, tmp_path):
    line = one_line_exit_2(
        capsys, "pretrain", f"model.dir={tmp_path / 'new'}", f"model.init_from_bert={tmp_path / 'bert'}"
    )
    assert f"{tmp_path / 'bert'}: does not exist" in line


def test_a_user_ds_json_that_disagrees_with_the_run_config_is_refused_naming_both(
    capsys, nothing_starts, tmp_path
):
    layout = tmp_path / "mine.json"
    layout.write_text('{"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}')
    line = one_line_exit_2(capsys, "pretrain", f"train.ds_config={layout}", "optim.grad_clip=2.0")
    assert f"{layout}: gradient_clipping=1.0 but optim.grad_clip=2.0" in line


def test_config_show_prints_a_finetune_config_as_one(capsys):
    code, out, _ = run(capsys, "config", "show", "--config", "finetune-vqa")
    assert code == 0
    assert out.startswith("# finetune config finetune-vqa") and "task: vqa" in out
    assert "runs_dir: runs/finetune" in out


@pytest.mark.parametrize(
    ("name", "kind"),
    [("pretrain-uniter-mini", "pretrain"), ("imp-uniter-mini", "imp"), ("reproduce-quick", "reproduce")],
)
def test_config_show_tells_every_kind_of_config(capsys, name, kind):
    code, out, _ = run(capsys, "config", "show", "--config", name)
    assert code == 0 and out.startswith(f"# {kind} config {name}")


def test_config_show_resolves_the_stages_a_pipeline_names(capsys):
    code, out, _ = run(capsys, "config", "show", "--config", "pipeline-uniter-mini", "--stages")
    assert code == 0
    stages = [line for line in out.splitlines() if line.startswith("# stage ")]
    assert any("theta0" in s for s in stages) and any("IMP" in s for s in stages)
    assert sum("fine-tune" in s for s in stages) == 7


def test_help_and_version_import_neither_torch_nor_deepspeed():
    """What makes `lottery --help` answer in well under 2 s: nothing heavy is imported to parse."""
    code = (
        "import sys\n"
        "from lottery.cli import main\n"
        "for argv in (['--help'], ['--version'], ['finetune', '--help'], ['ticket', '--help'], ['ticket', 'export', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0, (argv, exit_.code)\n"
        "print(sorted(m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert f"lottery {lottery.__version__}" in done.stdout.splitlines()
