"""The ``lottery`` command: parse the arguments, then call one job function. No logic of its own.

Runs the same under every launcher: ``deepspeed`` appends ``--local_rank=N`` (accepted and ignored;
the rank is read from the environment by ``lottery.dist``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lottery.tickets.cli import add_ticket_commands


def _data_shapes(args: argparse.Namespace) -> None:
    from lottery.data.shards import ShapesConfig, build_shapes

    cfg = ShapesConfig(
        seed=args.seed,
        train_samples=args.train,
        val_samples=args.val,
        samples_per_shard=args.samples_per_shard,
        feat_dim=args.feat_dim,
    )
    out = build_shapes(Path(args.out), cfg)
    print(f"shapes world written to {out}")


def _model_init(args: argparse.Namespace) -> None:
    from lottery.train.assets import build_model_from_bert

    out = build_model_from_bert(args.from_bert, Path(args.out), img_dim=args.img_dim, data_dir=args.data)
    print(f"UNITER initialised from {args.from_bert} written to {out}")


def _model_convert(args: argparse.Namespace) -> None:
    from lottery.models.uniter import convert_original, preset, save_pretrained

    model, report = convert_original(Path(args.from_original), preset(args.config))
    print(report.summary())
    save_pretrained(model, Path(args.out))
    print(f"converted {args.from_original} ({args.config}) to {args.out}")


def _pretrain(args: argparse.Namespace) -> None:
    from lottery.config import load_config
    from lottery.train.pretrain import pretrain

    pretrain(load_config(args.config, args.overrides))


def _theta0(args: argparse.Namespace) -> None:
    from lottery import dist
    from lottery.config import load_config
    from lottery.train.theta0 import ensure_theta0

    seeds = args.seeds or [None]
    built = []
    for seed in seeds:
        overrides = args.overrides + ([] if seed is None else [f"train.seed={seed}"])
        model_dir = ensure_theta0(load_config(args.config, overrides))
        if model_dir is None:
            break
        built.append(model_dir.parent)
        if dist.is_main():
            print(f"theta0 model: {model_dir}", flush=True)
    if dist.is_main() and len(built) > 1:
        from lottery.train.theta0 import seed_summary

        print(f"theta0 over seeds {seeds}:\n{seed_summary(built)}", flush=True)
    dist.shutdown()


def _imp(args: argparse.Namespace) -> None:
    from lottery.config import ImpConfig, load_config
    from lottery.imp.run import check_config, imp
    from lottery.imp.state import planned_run_dir

    config = load_config(args.config, args.overrides, cls=ImpConfig)
    if args.print_run_dir:
        check_config(config)
        print(planned_run_dir(config))
        return
    imp(config)


def _finetune(args: argparse.Namespace) -> None:
    from lottery.train.finetune import finetune
    from lottery.train.finetune_configs import task_config

    chosen = [f"ticket={args.ticket}", f"init={args.init}"]
    chosen += [f"store={args.store}"] if args.store else []
    chosen += ["save_model=false"] if args.no_save else []
    chosen += ["adversarial.enabled=true"] if args.adversarial else []
    finetune(task_config(args.task, args.config, chosen + args.overrides))


def _sweep(args: argparse.Namespace) -> None:
    from lottery.train.sweep import array_part, parse_part, sweep, sweep_configs

    overrides = (["save_model=false"] if args.no_save else []) + args.overrides
    adversarial = (False, True) if args.adversarial else (False,)
    configs = sweep_configs(args.tasks, args.tickets, args.inits, adversarial, args.config, overrides)
    if args.list_missing:
        from lottery.train.sweep import missing_jobs

        print(",".join(str(i) for i in missing_jobs(configs)))
        return
    sweep(configs, parse_part(args.part or array_part()))


def _pipeline(args: argparse.Namespace) -> None:
    from lottery.config import PipelineConfig, load_config
    from lottery.train.pipeline import run_pipeline, run_worker
    from lottery.train.sweep import parse_part

    config = load_config(args.config, args.overrides, cls=PipelineConfig)
    if args.part:
        run_worker(config, parse_part(args.part))
    else:
        run_pipeline(config, ["--config", args.config, *args.overrides])


def _reproduce(args: argparse.Namespace) -> None:
    from lottery.config import load_config
    from lottery.study.config import ReproduceConfig
    from lottery.study.run import reproduce, run_worker
    from lottery.train.sweep import parse_part

    name = args.config or ("reproduce-quick" if args.quick else "reproduce-uniter-mini")
    config = load_config(name, args.overrides, cls=ReproduceConfig)
    if args.part:
        run_worker(config, Path(args.out), parse_part(args.part))
    else:
        reproduce(config, Path(args.out), ["--out", args.out, "--config", name, *args.overrides])


def _report(args: argparse.Namespace) -> None:
    from lottery.report.collect import collect
    from lottery.report.render import write_report

    path = write_report(collect([Path(d) for d in args.runs]), Path(args.out))
    print(path.read_text(), end="")
    print(f"report written to {path.parent} (report.md, results.csv, PNG figures)")


def _eval(args: argparse.Namespace) -> None:
    from lottery.evaluation.grounding import evaluate_model_dir, format_criteria

    _, rows = evaluate_model_dir(args.model, args.data, samples=args.samples, batch_size=args.batch_size)
    print(f"{args.model} on {args.data} (first {args.samples} val samples):")
    print(format_criteria(rows))


def _config_show(args: argparse.Namespace) -> None:
    import yaml

    from lottery.config import (
        ImpConfig,
        PipelineConfig,
        PretrainConfig,
        config_path,
        digest,
        load_config,
        to_yaml,
    )

    tree = yaml.safe_load(config_path(args.config).read_text()) or {}
    tree = tree if isinstance(tree, dict) else {}
    from lottery.study.config import ReproduceConfig

    kind = PipelineConfig if "imp_overrides" in tree else ImpConfig if "imp" in tree else PretrainConfig
    kind = ReproduceConfig if "theta0_seeds" in tree else kind
    config = load_config(args.config, args.overrides, cls=kind)
    print(f"# digest {digest(config)}")
    print(to_yaml(config), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lottery", description=__doc__.splitlines()[0])
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_asset_commands(commands)
    _add_training_commands(commands)
    _add_finetune_commands(commands)
    _add_output_commands(commands)
    add_ticket_commands(commands)
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
    shapes.set_defaults(func=_data_shapes)

    model = commands.add_parser("model", help="make model directories").add_subparsers(
        dest="what", required=True
    )
    init = model.add_parser(
        "init", help="UNITER with text side from a BERT (default: MiniLM-L6 -> uniter-mini)"
    )
    init.add_argument("--from-bert", default="minilm", help="a Hugging Face BERT folder, or 'minilm'")
    init.add_argument("--out", required=True)
    init.add_argument("--img-dim", type=int, default=2048, help="region feature size (must match the data)")
    init.add_argument(
        "--data", default=None, help="a shards directory whose meta.json sets img-dim and classes"
    )
    init.set_defaults(func=_model_init)
    convert = model.add_parser("convert", help="an original UNITER checkpoint (.pt state dict) to our format")
    convert.add_argument("--from-original", required=True)
    convert.add_argument("--config", required=True, help="uniter-base or uniter-large")
    convert.add_argument("--out", required=True)
    convert.set_defaults(func=_model_convert)


def _add_training_commands(commands) -> None:
    """`pretrain`, `theta0`, `imp` and `pipeline`: the jobs that train on the pre-training tasks."""
    pretrain = commands.add_parser("pretrain", help="pre-train on MLM/ITM/MRFR/MRC-kl on a DeepSpeed engine")
    pretrain.add_argument("--config", default="pretrain-uniter-mini", help="shipped config name or YAML path")
    pretrain.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    pretrain.set_defaults(func=_pretrain)

    theta0 = commands.add_parser(
        "theta0", help="build (once) or reuse the pre-trained theta0 of a config, and print its criteria"
    )
    theta0.add_argument("--config", default="pretrain-uniter-mini", help="shipped config name or YAML path")
    theta0.add_argument("--seeds", type=int, nargs="+", help="build one theta0 per seed and summarise them")
    theta0.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    theta0.set_defaults(func=_theta0)

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
    imp.set_defaults(func=_imp)

    flow = commands.add_parser(
        "pipeline",
        help="the universal-ticket study: IMP -> publish -> fine-tune dense and tickets on every task -> report",
    )
    flow.add_argument("--config", default="pipeline-uniter-mini", help="shipped config name or YAML path")
    flow.add_argument("--part", default="", help=argparse.SUPPRESS)  # a fine-tune worker's share (internal)
    flow.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. 'imp_overrides=[train.steps=8]' workers=1"
    )
    flow.set_defaults(func=_pipeline)

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
    study.set_defaults(func=_reproduce)


def _add_finetune_commands(commands) -> None:
    """`finetune` and `sweep`: downstream tasks under tickets."""
    tune = commands.add_parser("finetune", help="fine-tune one downstream task from theta0 under a ticket")
    tune.add_argument("--task", required=True, help="vqa, gqa, vcr, snli-ve, refcoco+, retrieval or nlvr2")
    tune.add_argument("--ticket", default="dense", help="ticket alias or id in the store, or dense")
    tune.add_argument("--init", default="theta0", help="theta0, bert (theta0') or shuffled (theta0'')")
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
    tune.set_defaults(func=_finetune)

    grid = commands.add_parser(
        "sweep", help="fine-tune a grid of tickets x tasks, one after another; skips done jobs"
    )
    grid.add_argument("--tasks", nargs="+", required=True)
    grid.add_argument("--tickets", nargs="+", required=True, help="aliases or ids, and/or dense")
    grid.add_argument("--inits", nargs="+", default=["theta0"], help="theta0, bert, shuffled")
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
    grid.set_defaults(func=_sweep)


def _add_output_commands(commands) -> None:
    """`report`, `eval` and `config show`: reading what runs made, and what a config resolves to."""
    report = commands.add_parser("report", help="tables and figures from fine-tune run directories")
    report.add_argument("runs", nargs="+", help="run directories, or directories holding them")
    report.add_argument("--out", required=True, help="output directory")
    report.set_defaults(func=_report)

    evaluate = commands.add_parser("eval", help="the theta0 criteria of a model directory on the val split")
    evaluate.add_argument("--model", required=True, help="a model directory")
    evaluate.add_argument("--data", default="data/shapes", help="a shapes shards directory")
    evaluate.add_argument("--samples", type=int, default=512, help="val samples to read")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.set_defaults(func=_eval)

    config = commands.add_parser("config", help="print a resolved run config").add_subparsers(
        dest="what", required=True
    )
    show = config.add_parser("show")
    show.add_argument("--config", default="pretrain-uniter-mini")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(func=_config_show)


# exit codes: 2 = bad input (config, ticket, model directory), 3 = a run that failed its own proof (a revived mask),
# 4 = the run directory is held by another live job, 5 = stopped on a signal at a step boundary (SLURM
# preemption / time limit), checkpointed: the batch script requeues on it
EXIT_BAD_INPUT, EXIT_MASK_VIOLATED, EXIT_RUN_BUSY, EXIT_PREEMPTED = 2, 3, 4, 5
TRAINING_COMMANDS = ("pretrain", "theta0", "imp", "finetune", "sweep")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)  # before the heavy imports: a usage error answers at once

    from lottery.config import ConfigError
    from lottery.models.uniter.checkpoint import ModelDirError
    from lottery.run_lock import RunBusy
    from lottery.sparsity.enforce import MaskViolation
    from lottery.tickets.format import TicketError
    from lottery.train.step import Preempted, install_stop_handlers

    if args.command in TRAINING_COMMANDS:
        install_stop_handlers()  # a SLURM signal during setup is honoured at the first step boundary
    # an expected failure: one line on stderr (prefix + the error, which names the file or run) and its code
    expected = (
        (ConfigError, "config error: ", EXIT_BAD_INPUT),
        (TicketError, "ticket refused: ", EXIT_BAD_INPUT),
        (ModelDirError, "model refused: ", EXIT_BAD_INPUT),
        (MaskViolation, "", EXIT_MASK_VIOLATED),
        (RunBusy, "", EXIT_RUN_BUSY),
        (Preempted, "", EXIT_PREEMPTED),
    )
    try:
        args.func(args)
    except tuple(kind for kind, _, _ in expected) as err:
        prefix, code = next((p, c) for kind, p, c in expected if isinstance(err, kind))
        print(f"lottery: {prefix}{err}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
