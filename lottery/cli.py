"""The ``lottery`` command: parse the arguments, then call one job function. No logic of its own.

Runs the same under every launcher: ``deepspeed`` appends ``--local_rank=N`` (accepted and ignored;
the rank is read from the environment by ``lottery.dist``). Nothing heavy is imported before the
arguments are parsed, so ``--help`` and a usage error answer at once; a training command then loads its
config and checks what it names (`lottery.preflight`) before torch, a process group or an engine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lottery import cli_commands as commands_run
from lottery.cli_errors import (  # noqa: F401 (the exit codes are part of this module's interface)
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_MASK_VIOLATED,
    EXIT_PREEMPTED,
    EXIT_RUN_BUSY,
    EXIT_WRITE_FAILED,
    exit_on_expected_failure,
)
from lottery.config import STARTS
from lottery.data.convert import FORMATS
from lottery.data.examples import TASK_NAMES
from lottery.models.families import FAMILY_NAMES

DESCRIPTION = (
    "Find lottery tickets in vision-and-language transformers (UNITER) on DeepSpeed: pre-train theta0, "
    "prune it by iterative magnitude pruning, fine-tune the tickets on downstream tasks, and report."
)
EPILOG = (
    "Start with `lottery pipeline` (the whole study on one machine) or `lottery reproduce --quick --out DIR`. "
    "`lottery config show --config NAME` prints what a config resolves to; `lottery COMMAND --help` lists a "
    "command's options. Exit codes: 2 bad input, 3 a revived mask, 4 run directory busy, 5 preempted."
)
TICKET_HELP = "cut, inspect, verify, alias, export and apply tickets"  # as lottery.tickets.cli says it


class _Parser(argparse.ArgumentParser):
    """A usage error is one line (the command, the problem, where to look), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given `argv`, the ``ticket`` commands are only built when `argv` names them
    (lottery.tickets imports torch), so every other command parses without it."""
    import lottery

    parser = _Parser(prog="lottery", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"lottery {lottery.__version__}")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_asset_commands(commands)
    _add_training_commands(commands)
    _add_finetune_commands(commands)
    _add_output_commands(commands)
    if argv is None or "ticket" in argv:
        from lottery.tickets.cli import add_ticket_commands

        add_ticket_commands(commands)
    else:
        commands.add_parser("ticket", help=TICKET_HELP)
    return parser


def _add_asset_commands(commands) -> None:
    """`data` and `model`: what a run starts from."""
    data = commands.add_parser("data", help="build datasets").add_subparsers(dest="what", required=True)
    shapes = data.add_parser("shapes", help="write the procedural shapes world as webdataset shards")
    shapes.add_argument("--out", required=True, help="output directory")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--train", type=int, default=20000, help="train samples")
    shapes.add_argument("--val", type=int, default=1000, help="val samples")
    shapes.add_argument("--samples-per-shard", type=int, default=1000)
    shapes.add_argument("--feat-dim", type=int, default=2048, help="region feature size D")
    shapes.add_argument(
        "--render",
        type=int,
        default=0,
        metavar="SIZE",
        help="also write each scene as a SIZE x SIZE PNG image (>= 16), for patch models (ViLT); 0: none",
    )
    shapes.set_defaults(func=commands_run.data_shapes)
    conv = data.add_parser(
        "convert",
        help="data you already have (LXMERT's TSV, UNITER's LMDBs, ViLT's Arrow tables) as webdataset shards; resumable",
    )
    conv.add_argument("--from", dest="fmt", required=True, choices=FORMATS, help="the input format")
    conv.add_argument("--out", required=True, help="output directory (one split)")
    conv.add_argument("--split", required=True, choices=("train", "val"), help="the split the samples form")
    conv.add_argument("--samples-per-shard", type=int, default=1000)
    conv.add_argument("--overwrite", action="store_true", help="replace a finished dataset at --out")
    lxmert = conv.add_argument_group("--from lxmert")
    lxmert.add_argument("--tsv", help="the bottom-up-attention features TSV")
    lxmert.add_argument("--captions", nargs="+", metavar="JSON", help="LXMERT caption JSON file(s)")
    uniter = conv.add_argument_group("--from uniter")
    uniter.add_argument("--img-db", help="the image LMDB directory (plain or compressed)")
    uniter.add_argument(
        "--txt-db", nargs="+", metavar="DIR", help="text LMDB directory(ies) with txt2img.json: the texts"
    )
    vilt = conv.add_argument_group("--from vilt")
    vilt.add_argument(
        "--arrow", nargs="+", metavar="FILE", help="ViLT Arrow file(s) of one layout: captions, VQA v2, NLVR2"
    )
    conv.set_defaults(func=commands_run.data_convert)

    model = commands.add_parser("model", help="make model directories").add_subparsers(
        dest="what", required=True
    )
    init = model.add_parser(
        "init",
        help="a model whose text side is a BERT's (default: MiniLM-L6 -> uniter-mini, lxmert-mini or vilt-mini)",
    )
    init.add_argument(
        "--family", choices=FAMILY_NAMES, default="uniter", help="the architecture (default: uniter)"
    )
    init.add_argument("--from-bert", default="minilm", help="a Hugging Face BERT folder, or 'minilm'")
    init.add_argument("--out", required=True)
    init.add_argument("--img-dim", type=int, default=2048, help="region feature size (must match the data)")
    init.add_argument(
        "--data",
        default=None,
        help="a shards directory whose meta.json sets img-dim and classes (vilt: the image size, default 64)",
    )
    init.set_defaults(func=commands_run.model_init)
    convert = model.add_parser("convert", help="an original UNITER checkpoint (.pt state dict) to our format")
    convert.add_argument("--from-original", required=True)
    convert.add_argument("--config", required=True, help="uniter-base or uniter-large")
    convert.add_argument("--out", required=True)
    convert.set_defaults(func=commands_run.model_convert)


def _add_training_commands(commands) -> None:
    """`pretrain`, `theta0`, `imp` and `pipeline`: the jobs that train on the pre-training tasks."""
    pretrain = commands.add_parser("pretrain", help="pre-train on MLM/ITM/MRFR/MRC-kl on a DeepSpeed engine")
    pretrain.add_argument("--config", default="pretrain-uniter-mini", help="shipped config name or YAML path")
    pretrain.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    pretrain.set_defaults(func=commands_run.pretrain, prepare=commands_run.prepare_pretrain)

    theta0 = commands.add_parser(
        "theta0", help="build (once) or reuse the pre-trained theta0 of a config, and print its criteria"
    )
    theta0.add_argument("--config", default="pretrain-uniter-mini", help="shipped config name or YAML path")
    theta0.add_argument("--seeds", type=int, nargs="+", help="build one theta0 per seed and summarise them")
    theta0.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    theta0.set_defaults(func=commands_run.theta0, prepare=commands_run.prepare_theta0)

    imp = commands.add_parser(
        "imp",
        help="iterative magnitude pruning (or oneshot/random) from theta0; resumable, publishes tickets",
    )
    imp.add_argument("--config", default="imp-uniter-mini", help="shipped config name or YAML path")
    imp.add_argument(
        "--print-run-dir",
        action="store_true",
        help="print the run directory the config names (it holds DONE once finished), run nothing",
    )
    imp.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. imp.method=random train.steps=50"
    )
    imp.set_defaults(func=commands_run.imp, prepare=commands_run.prepare_imp)

    flow = commands.add_parser(
        "pipeline",
        help="the universal-ticket study: IMP -> publish -> fine-tune dense and tickets on every task -> report",
    )
    flow.add_argument("--config", default="pipeline-uniter-mini", help="shipped config name or YAML path")
    flow.add_argument("--part", default="", help=argparse.SUPPRESS)  # a fine-tune worker's share (internal)
    flow.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. 'imp_overrides=[train.steps=8]' workers=1"
    )
    flow.set_defaults(func=commands_run.pipeline, prepare=commands_run.prepare_pipeline)

    study = commands.add_parser(
        "reproduce",
        help="the paper's study: theta0 seeds, universal and task IMP, baselines, fine-tunes over seeds -> "
        "Table 1, Table 2 and the transfer matrix (resumable)",
    )
    study.add_argument("--out", required=True, help="the study's directory (runs, tickets, tables)")
    study.add_argument("--quick", action="store_true", help="a few-minute version (config reproduce-quick)")
    study.add_argument("--config", default=None, help="shipped config name or YAML path")
    study.add_argument("--part", default="", help=argparse.SUPPRESS)  # a fine-tune worker's share (internal)
    study.add_argument("overrides", nargs="*", help="key=value overrides, e.g. 'seeds=[0]' workers=1")
    study.set_defaults(func=commands_run.reproduce, prepare=commands_run.prepare_reproduce)


def _add_finetune_commands(commands) -> None:
    """`finetune` and `sweep`: downstream tasks under tickets."""
    tune = commands.add_parser("finetune", help="fine-tune one downstream task from theta0 under a ticket")
    tune.add_argument("--task", required=True, choices=TASK_NAMES, metavar="TASK", help=", ".join(TASK_NAMES))
    tune.add_argument("--ticket", default="dense", help="ticket alias or id in the store, or dense")
    tune.add_argument(
        "--init", default="theta0", choices=STARTS, help="theta0, bert (theta0') or shuffled (theta0'')"
    )
    tune.add_argument(
        "--store", default=None, help="ticket store (default: $LOTTERY_TICKET_STORE or ./tickets)"
    )
    tune.add_argument("--no-save", action="store_true", help="do not write the fine-tuned model (sweeps)")
    tune.add_argument(
        "--adversarial", action="store_true", help="VILLA-style adversarial training (adversarial.*)"
    )
    tune.add_argument(
        "--config", default=None, help="a finetune YAML (default: the task's shipped finetune-<task>.yaml)"
    )
    tune.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. train.steps=100 train.zero_stage=3"
    )
    tune.set_defaults(func=commands_run.finetune, prepare=commands_run.prepare_finetune)

    grid = commands.add_parser(
        "sweep", help="fine-tune a grid of tickets x tasks, one after another; skips done jobs"
    )
    grid.add_argument("--tasks", nargs="+", required=True, choices=TASK_NAMES, metavar="TASK")
    grid.add_argument("--tickets", nargs="+", required=True, help="aliases or ids, and/or dense")
    grid.add_argument("--inits", nargs="+", default=["theta0"], choices=STARTS, help="theta0, bert, shuffled")
    grid.add_argument(
        "--adversarial", action="store_true", help="also run every job with adversarial training"
    )
    grid.add_argument("--no-save", action="store_true", help="do not write the fine-tuned models")
    grid.add_argument(
        "--part",
        default="",
        help="I/N: run every N-th job from the I-th (parallel workers; in a SLURM job array the default "
        "is the array task's share); default: all",
    )
    grid.add_argument(
        "--list-missing",
        action="store_true",
        help="print the grid positions of the jobs not done (comma-separated: an sbatch --array list)",
    )
    grid.add_argument(
        "--config", default=None, help="a finetune YAML (default: the task's shipped finetune-<task>.yaml)"
    )
    grid.add_argument("overrides", nargs="*", help="key=value overrides of every job")
    grid.set_defaults(func=commands_run.sweep, prepare=commands_run.prepare_sweep)


def _add_output_commands(commands) -> None:
    """`report`, `eval` and `config show`: reading what runs made, and what a config resolves to."""
    report = commands.add_parser("report", help="tables and figures from fine-tune run directories")
    report.add_argument("runs", nargs="+", help="run directories, or directories holding them")
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(func=commands_run.report)

    evaluate = commands.add_parser("eval", help="the theta0 criteria of a model directory on the val split")
    evaluate.add_argument("--model", required=True, help="a model directory")
    evaluate.add_argument("--data", default="data/shapes", help="a shapes shards directory")
    evaluate.add_argument("--samples", type=int, default=512, help="val samples to read")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.set_defaults(func=commands_run.eval_model)

    config = commands.add_parser("config", help="print a resolved run config").add_subparsers(
        dest="what", required=True
    )
    show = config.add_parser(
        "show", help="the resolved config of any kind (pretrain, imp, finetune, pipeline, reproduce)"
    )
    show.add_argument("--config", default="pretrain-uniter-mini", help="shipped config name or YAML path")
    show.add_argument(
        "--kind",
        choices=("pretrain", "imp", "finetune", "pipeline", "reproduce"),
        help="what the config is (default: told from its keys, then from its name)",
    )
    show.add_argument(
        "--stages",
        action="store_true",
        help="also print every stage it names (theta0, the IMP run, each task's fine-tune), each resolved",
    )
    show.add_argument("--out", default="OUT", help="reproduce's --out, under which its stages' paths lie")
    show.add_argument("overrides", nargs="*", help="key=value overrides, as the command of that kind takes")
    show.set_defaults(func=commands_run.config_show)


TRAINING_COMMANDS = ("pretrain", "theta0", "imp", "finetune", "sweep")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)  # before any heavy import: a usage error answers at once
    with exit_on_expected_failure():
        from lottery import logs

        logs.configure()  # the job log: once per process, by rank
        prepare = getattr(args, "prepare", None)
        args.prepared = prepare(args) if prepare is not None else None
        if args.command in TRAINING_COMMANDS:
            from lottery.train.step import install_stop_handlers

            install_stop_handlers()  # a SLURM signal during setup is honoured at the first step boundary
        args.func(args)


if __name__ == "__main__":
    main()
