"""What each ``lottery`` command does once its arguments are parsed (lottery/cli.py builds the parser).

A training command has two halves: ``prepare_<command>`` loads its config(s) and runs every check of
`lottery.preflight` (config values, ticket references, model and data directories, the DeepSpeed JSON)
without torch, a process group or an engine; the command itself then reads them from
``args.prepared``. So a user's mistake costs a second, not a `deepspeed.initialize`. Heavy imports stay
inside the functions, which keeps ``lottery --help`` fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def data_shapes(args: argparse.Namespace) -> None:
    from lottery.data.render import MIN_SIZE
    from lottery.data.shards import ShapesConfig, build_shapes
    from lottery.preflight import InputError

    if args.render != 0 and args.render < MIN_SIZE:  # one line naming the option, not a traceback
        raise InputError(f"--render {args.render}: must be 0 (no images) or >= {MIN_SIZE} pixels")
    cfg = ShapesConfig(
        seed=args.seed,
        train_samples=args.train,
        val_samples=args.val,
        samples_per_shard=args.samples_per_shard,
        feat_dim=args.feat_dim,
        render_size=args.render,
    )
    out = build_shapes(Path(args.out), cfg)
    print(f"shapes world written to {out}")


def data_convert(args: argparse.Namespace) -> None:
    """`lottery data convert`: the inputs checked here (one line, exit 2), the work in lottery.data.convert."""
    from lottery.preflight import InputError, require_path

    if args.samples_per_shard < 1:
        raise InputError(f"--samples-per-shard {args.samples_per_shard}: must be >= 1")
    inputs = {
        "lxmert": {"--tsv": args.tsv, "--captions": args.captions},
        "uniter": {"--img-db": args.img_db, "--txt-db": args.txt_db},
        "vilt": {"--arrow": args.arrow},
    }
    stray = [opt for fmt, given in inputs.items() if fmt != args.fmt for opt, value in given.items() if value]
    if stray:
        raise InputError(f"{', '.join(stray)}: not an input of --from {args.fmt}")
    missing = [opt for opt, value in inputs[args.fmt].items() if not value]
    if missing:
        why = " (a sample needs texts and an image DB holds none)" if "--txt-db" in missing else ""
        raise InputError(f"--from {args.fmt} needs {' and '.join(missing)}{why}")
    common = {"split": args.split, "samples_per_shard": args.samples_per_shard, "overwrite": args.overwrite}
    try:
        if args.fmt == "lxmert":
            tsv = require_path(args.tsv, "--tsv")
            captions = [require_path(path, "--captions") for path in args.captions]
            from lottery.data.convert.lxmert_tsv import convert_lxmert

            result, skipped = convert_lxmert(tsv, captions, Path(args.out), **common)
            left_out = f"{skipped} image(s) of the TSV have no caption: skipped"
        elif args.fmt == "vilt":
            arrows = [require_path(path, "--arrow") for path in args.arrow]
            from lottery.data.convert.vilt_arrow import convert_vilt

            result, left = convert_vilt(arrows, Path(args.out), **common)
            dropped = sorted({name for names in left["dropped_columns"].values() for name in names})
            left_out = f"skipped: {left['rows_without_texts']} row(s) without a text" + (
                f"; column(s) not copied (not plain values): {', '.join(dropped)}" if dropped else ""
            )
        else:
            img_db = require_path(args.img_db, "--img-db", directory=True)
            txt_dbs = [require_path(path, "--txt-db", directory=True) for path in args.txt_db]
            from lottery.data.convert.uniter_lmdb import convert_uniter

            result, counts = convert_uniter(img_db, txt_dbs, Path(args.out), **common)
            left_out = (
                f"skipped: {counts['images_without_texts']} image(s) without a text, "
                f"{counts['texts_without_image']} text(s) of images not in the image DB, "
                f"{counts['pair_texts']} image-pair (NLVR2) text(s)"
            )
    except FileExistsError as err:
        raise InputError(f"--out: {err}") from None
    reused = f" ({result.reused} kept from an interrupted run)" if result.reused else ""
    print(
        f"{result.samples} {args.split} sample(s) in {result.shards} shard(s){reused} written to {result.out}"
    )
    print(left_out)


def model_init(args: argparse.Namespace) -> None:
    from lottery.preflight import MINILM, require_data_dir, require_path

    if args.from_bert != MINILM:
        require_path(args.from_bert, "--from-bert", directory=True)
    if args.data is not None:
        require_data_dir(args.data, "--data")
    from lottery.train.assets import build_model_from_bert

    out = build_model_from_bert(
        args.from_bert, Path(args.out), img_dim=args.img_dim, data_dir=args.data, family=args.family
    )
    print(f"{args.family} initialised from {args.from_bert} written to {out}")


def model_convert(args: argparse.Namespace) -> None:
    from lottery.preflight import InputError, require_path

    require_path(args.from_original, "--from-original")
    from lottery.models.uniter import convert_original, preset, save_pretrained

    try:
        config = preset(args.config)
    except ValueError as err:  # an unknown preset name, which the error lists
        raise InputError(f"--config: {err}") from None
    try:
        model, report = convert_original(Path(args.from_original), config)
    except ValueError as err:  # not a weights-only state dict, or not one of this config: the error names why
        raise InputError(f"--from-original {err}") from None
    print(report.summary())
    save_pretrained(model, Path(args.out))
    print(f"converted {args.from_original} ({args.config}) to {args.out}")


def _checked(config, out: Path | None = None):
    """`config` once it and every stage it names passed `lottery.preflight.check_job`."""
    from lottery.preflight import check_job

    check_job(config, out)
    return config


# `prepare` functions: the command's config(s), loaded and checked before main installs the stop
# handlers and the command imports torch; the command reads them from `args.prepared`
def prepare_pretrain(args: argparse.Namespace):
    from lottery.config import load_config

    return _checked(load_config(args.config, args.overrides))


def prepare_theta0(args: argparse.Namespace):
    from lottery.config import load_config

    seeds = args.seeds or [None]
    return [
        (
            seed,
            _checked(
                load_config(args.config, args.overrides + ([] if seed is None else [f"train.seed={seed}"]))
            ),
        )
        for seed in seeds
    ]


def pretrain(args: argparse.Namespace) -> None:
    from lottery.train.pretrain import pretrain

    pretrain(args.prepared)


def theta0(args: argparse.Namespace) -> None:
    from lottery import dist
    from lottery.train.theta0 import ensure_theta0

    seeds = [seed for seed, _ in args.prepared]
    built = []
    for _, config in args.prepared:
        model_dir = ensure_theta0(config)
        if model_dir is None:
            break
        built.append(model_dir.parent)
        if dist.is_main():
            print(f"theta0 model: {model_dir}", flush=True)
    if dist.is_main() and len(built) > 1:
        from lottery.train.theta0 import seed_summary

        print(f"theta0 over seeds {seeds}:\n{seed_summary(built)}", flush=True)
    dist.shutdown()


def prepare_imp(args: argparse.Namespace):
    from lottery.config import ImpConfig, load_config

    return _checked(load_config(args.config, args.overrides, cls=ImpConfig))


def imp(args: argparse.Namespace) -> None:
    from lottery.imp.checks import check_config
    from lottery.imp.run import imp
    from lottery.imp.state import planned_run_dir

    config = args.prepared
    if args.print_run_dir:
        check_config(config)
        print(planned_run_dir(config))
        return
    imp(config)


def prepare_finetune(args: argparse.Namespace):
    from lottery.train.finetune_configs import task_config

    chosen = [f"ticket={args.ticket}", f"init={args.init}"]
    chosen += [f"store={args.store}"] if args.store else []
    chosen += ["save_model=false"] if args.no_save else []
    chosen += ["adversarial.enabled=true"] if args.adversarial else []
    return _checked(task_config(args.task, args.config, chosen + args.overrides))


def finetune(args: argparse.Namespace) -> None:
    from lottery.train.finetune import finetune

    finetune(args.prepared)


def prepare_sweep(args: argparse.Namespace):
    from lottery.preflight import check_finetune
    from lottery.train.sweep import sweep_configs

    overrides = (["save_model=false"] if args.no_save else []) + args.overrides
    adversarial = (False, True) if args.adversarial else (False,)
    configs = sweep_configs(args.tasks, args.tickets, args.inits, adversarial, args.config, overrides)
    if not args.list_missing:  # listing what is missing reads run directories only
        for config in {(c.task, c.ticket): c for c in configs}.values():
            check_finetune(config)
    return configs


def sweep(args: argparse.Namespace) -> None:
    from lottery.train.sweep import array_part, parse_part, sweep

    configs = args.prepared
    if args.list_missing:
        from lottery.train.sweep import missing_jobs

        print(",".join(str(i) for i in missing_jobs(configs)))
        return
    sweep(configs, parse_part(args.part or array_part()))


def prepare_pipeline(args: argparse.Namespace):
    from lottery.config import PipelineConfig, load_config

    return _checked(load_config(args.config, args.overrides, cls=PipelineConfig))


def pipeline(args: argparse.Namespace) -> None:
    from lottery.train.pipeline import run_pipeline, run_worker
    from lottery.train.sweep import parse_part

    config = args.prepared
    if args.part:
        run_worker(config, parse_part(args.part))
    else:
        run_pipeline(config, ["--config", args.config, *args.overrides])


def _reproduce_name(args: argparse.Namespace) -> str:
    return args.config or ("reproduce-quick" if args.quick else "reproduce-uniter-mini")


def prepare_reproduce(args: argparse.Namespace):
    from lottery.config import load_config
    from lottery.study.config import ReproduceConfig

    return _checked(load_config(_reproduce_name(args), args.overrides, cls=ReproduceConfig), Path(args.out))


def reproduce(args: argparse.Namespace) -> None:
    from lottery.study.run import reproduce, run_worker
    from lottery.train.sweep import parse_part

    name, config = _reproduce_name(args), args.prepared
    if args.part:
        run_worker(config, Path(args.out), parse_part(args.part))
    else:
        reproduce(config, Path(args.out), ["--out", args.out, "--config", name, *args.overrides])


def report(args: argparse.Namespace) -> None:
    from lottery.preflight import InputError, require_path
    from lottery.report.collect import collect
    from lottery.report.render import write_report

    runs = [require_path(d, "report: run directory", directory=True) for d in args.runs]
    try:
        results = collect(runs)
    except ValueError as err:  # a metrics.json that is not a fine-tune's, which the error names
        raise InputError(f"report: {err}") from None
    if not results:
        raise InputError(f"report: no fine-tune results (metrics.json) under {', '.join(args.runs)}")
    path = write_report(results, Path(args.out))
    print(path.read_text(), end="")
    print(f"report written to {path.parent} (report.md, results.csv, PNG figures)")


def eval_model(args: argparse.Namespace) -> None:
    from lottery.preflight import require_data_dir, require_model_dir

    require_model_dir(args.model, "eval --model")
    from lottery.models.uniter.checkpoint import refuse_finetuned

    refuse_finetuned(Path(args.model))  # the criteria need the pre-training heads: said before the data
    require_data_dir(args.data, "eval --data")
    from lottery.evaluation.grounding import evaluate_model_dir, format_criteria

    _, rows = evaluate_model_dir(args.model, args.data, samples=args.samples, batch_size=args.batch_size)
    print(f"{args.model} on {args.data} (first {args.samples} val samples):")
    print(format_criteria(rows))


def config_show(args: argparse.Namespace) -> None:
    from lottery.config import digest, to_yaml
    from lottery.config_stages import detect_kind, load_kind, stages

    kind = args.kind or detect_kind(args.config, args.overrides)
    config = load_kind(kind, args.config, args.overrides)
    print(f"# {kind} config {args.config}, digest {digest(config)}")
    print(to_yaml(config), end="")
    for title, stage in stages(config, Path(args.out)) if args.stages else ():
        print(f"---\n# stage {title}, digest {digest(stage)}")
        print(to_yaml(stage), end="")
