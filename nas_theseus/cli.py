"""The ``nas-theseus`` command line. ``main(argv) -> int`` so tests call it in-process.

A mistake in the user's input (:class:`~nas_theseus.errors.UserError`) prints one line, ``error: ...``, and
exits with 2; Ctrl-C exits with 130 after re-enqueueing the running trial; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from .errors import UserError

EPILOG = """\
examples:
  nas-theseus run studies/mnist1d_deploy.toml                # search; run again to continue the study
  nas-theseus run runs/mnist1d_deploy --n-trials 30          # continue it from its work directory alone
  nas-theseus run studies/mnist1d_deploy.toml --set study.n_trials=30 --set convert.steps_per_stage=300
  nas-theseus pareto runs/mnist1d_deploy --format json       # the Pareto-optimal trials, deploy wins marked
  nas-theseus trials runs/mnist1d_deploy                     # every trial, and why one failed or was pruned
  nas-theseus export runs/mnist1d_deploy --trial 0           # deployable folder, verified against the trial
  nas-theseus report runs/mnist1d_deploy                     # Pareto plot (PNG + HTML), alignment curves
  nas-theseus dashboard runs/mnist1d_deploy                  # optuna-dashboard on http://127.0.0.1:8080
  nas-theseus clean runs/mnist1d_deploy --max-size 5G        # free disk: stage checkpoints no trial needs
  nas-theseus data pack studies/imagefolder_cnn_to_mlp.toml # images decoded once into uint8 shards (packed = true)
  nas-theseus convert studies/mnist1d_cnn_to_mlp.toml \
      --params '{"conv1.width": 64, "conv2.width": 32, "conv3.width": 32, "order.0": 0, "order.1": 0}'
  nas-theseus run studies/mnist1d_deploy.toml --workers 8    # 8 workers: one per GPU on an 8-GPU node
  torchrun --nproc-per-node 8 -m nas_theseus run STUDY       # each trial trained on all 8 GPUs at once
  NAS_THESEUS_WORKER=3 nas-theseus run STUDY --storage postgresql://user@host/db \
      --artifacts s3://bucket/nas                            # one of many workers on many machines
"""


def _cmd_blocks(args: argparse.Namespace) -> int:
    from .targets import BLOCKS
    from .targets.registry import default_options

    for name in sorted(BLOCKS):
        opts = ", ".join(f"{k}={v!r}" for k, v in default_options(name).items())
        doc = (BLOCKS[name].__doc__ or "").strip().splitlines()[0]
        print(f"{name:10s} {doc}\n{'':10s} options: {opts or '(none)'}")
    return 0


def _load_config(args):
    from .study.config import load_study_config

    overrides = list(args.set or [])
    if getattr(args, "device", None):
        overrides.append(f"study.device={json.dumps(args.device)}")
    if getattr(args, "artifacts", None):
        overrides.append(f"artifacts.store={json.dumps(args.artifacts)}")
    if Path(args.study).is_dir():  # a work directory: the study as recorded there
        from .study.api import recorded_config

        if args.workdir and Path(args.workdir).resolve() != Path(args.study).resolve():
            raise UserError(f"{args.study} is a work directory: give it alone, or the study file with --workdir")
        return recorded_config(args.study, overrides)
    return load_study_config(args.study, overrides)


def _workdir(args, config) -> Path:
    if Path(args.study).is_dir():
        return Path(args.study)
    return Path(args.workdir) if args.workdir else Path("runs") / config.study.name


def _cmd_run(args: argparse.Namespace) -> int:
    from .study.runner import run_study
    from .utils.distributed import is_main, launched

    config = _load_config(args)
    workdir = _workdir(args, config)
    progress = not args.no_progress
    if launched() and (args.workers is not None or args.devices is not None):
        raise UserError("under torchrun every rank trains each trial with the others: one study process per "
                        "torchrun rank, so --workers and --devices do not apply (torchrun's --nproc-per-node does)")
    if args.workers is not None or args.devices is not None:
        return _run_workers(args, config, workdir)
    started = datetime.datetime.now()  # as Optuna stamps a trial's start
    try:
        study = run_study(config, workdir, storage=args.storage, force=args.force, progress=progress,
                          n_trials=args.n_trials, timeout=args.timeout)
    except KeyboardInterrupt as e:
        number = getattr(e, "requeued_trial", None)
        if number is None:
            print(f"\ninterrupted between trials; run the same command again to continue (work directory "
                  f"{workdir})", file=sys.stderr)
        else:
            why = f" ({e})" if type(e).__name__ == "RankLost" else ""
            print(f"\ninterrupted{why}: trial {number} was re-enqueued; run the same command again to resume it "
                  f"from its stage checkpoints (work directory {workdir})", file=sys.stderr)
        return 130
    if args.as_worker or not is_main():  # one of --workers' processes, or a torchrun rank but 0: printed once
        return 0
    print(f"\nwork directory: {workdir}")
    status = _print_front(workdir, "table", reuse=True)
    return status or _none_completed(study, started)


def _run_workers(args: argparse.Namespace, config, workdir: Path) -> int:
    """``run --workers N --devices ...``: prepare the study once, then N worker processes (study/launcher.py)."""
    from .study.autoworkers import choose
    from .study.latency_aside import layout_for
    from .study.launcher import assign, default_devices, launch, parse_devices
    from .study.runner import prepare_study
    from .study.storage import close_storages
    from .utils import cores

    if args.device:
        raise UserError("--device binds one process; with --workers, list the devices with --devices")
    listed = parse_devices(args.devices) if args.devices else default_devices()
    devices = assign(None if args.workers == "auto" else args.workers, listed)
    started = datetime.datetime.now()
    try:
        study = prepare_study(config, workdir, storage=args.storage, force=args.force, progress=not args.no_progress)
        layout = layout_for(config, listed[0])  # the workers train off the cores reserved for timing
        trainer_cores = layout.rest if layout is not None else tuple(cores.allowed())
        if args.workers == "auto":  # a count per device, measured on the first (study/autoworkers.py)
            with cores.pinned(trainer_cores):  # its measuring workers where the real ones will train
                choice = choose(workdir, listed[0], identity=study.user_attrs["identity"], cores=len(trainer_cores))
            print(choice.describe(), file=sys.stderr, flush=True)
            devices = assign(choice.per_device * len(listed), listed)
    except KeyboardInterrupt:
        print(f"\ninterrupted before any worker started; run the same command again (work directory {workdir})",
              file=sys.stderr)
        return 130
    close_storages()  # the workers write to it; this process reads it again at the end
    worker_args = [str(workdir)] if Path(args.study).is_dir() else [args.study, "--workdir", str(workdir)]
    for item in args.set or []:
        worker_args += ["--set", item]
    for flag, value in (("--storage", args.storage), ("--artifacts", args.artifacts), ("--n-trials", args.n_trials),
                        ("--timeout", args.timeout)):
        if value is not None:
            worker_args += [flag, str(value)]
    if args.force:
        worker_args.append("--force")
    threads = config.study.threads or max(1, len(trainer_cores) // len(devices))  # the usable cores split
    status = launch(worker_args, devices, threads=threads)
    if status == 130:
        print(f"interrupted: every running trial was re-enqueued; run the same command again to resume them from "
              f"their stage checkpoints (work directory {workdir})", file=sys.stderr)
        return status
    print(f"\nwork directory: {workdir}")
    _, _, study = _open(workdir)
    return _print_front(workdir, "table", reuse=True) or status or _none_completed(study, started)


def _none_completed(study, started: datetime.datetime) -> int:
    """1, with one line saying why, when trials started since ``started`` and none of them completed (every
    one failed or was pruned); 0 otherwise (a run with nothing left to do included)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_start >= started]
    if not trials or any(t.state == TrialState.COMPLETE for t in trials):
        return 0
    failed = [t for t in trials if t.state == TrialState.FAIL]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    first = next((t.user_attrs["fail_reason"] for t in failed if "fail_reason" in t.user_attrs), None)
    print(f"no trial completed in this run: {len(failed)} failed, {pruned} pruned"
          + (f"; the first failure: {first}" if first else ""), file=sys.stderr)
    return 1


def _open(workdir: Path, artifacts: str | None = None):
    from .study.api import open_study

    return open_study(workdir, artifacts)


def _print_front(workdir: Path, fmt: str, *, reuse: bool = False) -> int:
    from .measure import CONVENTION, CONVENTION_PER_TOKEN
    from .study.guide_reference import describe as describe_guide
    from .study.guide_reference import describe_wins
    from .study.pareto import front
    from .study.reuse import describe, study_reuse

    _, config, study = _open(workdir)
    names, directions = list(config.objectives), list(config.objectives.values())
    df, hv, ref = front(study, names, directions, config.hypervolume_reference)
    if fmt == "json":
        print(json.dumps(df.to_dict(orient="records"), indent=2))
    elif fmt == "csv":
        print(df.assign(params=df["params"].map(json.dumps)).to_csv(index=False), end="")  # the same columns
    else:
        if df.empty:
            print("no complete trials yet")
            return 0
        show = df.assign(params=df["params"].map(lambda p: json.dumps(p, separators=(",", ":"))))
        print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\nPareto front: {len(df)} of {len(study.trials)} trials; hypervolume {hv:.6g} (reference {ref})")
        for line in (describe_guide(study.user_attrs.get("guide_reference"), names), describe_wins(df, names)):
            if line:
                print(line)
        per_token = any("flops_decode" in t.user_attrs or "latency_full_sequence" in t.user_attrs
                        for t in study.trials)
        if "flops" in names:
            print(CONVENTION_PER_TOKEN if per_token else CONVENTION)
        if per_token and "latency_ms" in names:
            print("latency_ms: per generated token in incremental decoding (full-sequence figures in metrics.json)")
        if reuse:
            print(describe(study_reuse(study.get_trials(deepcopy=False))))
    return 0


def _cmd_pareto(args: argparse.Namespace) -> int:
    return _print_front(Path(args.dir), args.format)


def _cmd_trials(args: argparse.Namespace) -> int:
    """Every trial of the study: state, objective values, and why it ended as it did."""
    _, config, study = _open(Path(args.dir))
    names = list(config.objectives)
    rows = [_trial_row(t, names) for t in study.get_trials(deepcopy=False)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no trials yet")
        return 0
    for r in rows:
        values = ", ".join(f"{n} {r[n]:.4g}" for n in names if r.get(n) is not None)
        print("  ".join(filter(None, [f"{r['trial']:>4}", f"{r['state']:<8}", values,
                                      f"[{r['note']}]" if r["note"] else ""])))
    return 0


def _trial_row(t, names: list[str]) -> dict:
    attrs = t.user_attrs
    if "repeat_of" in attrs:
        note = f"repeat of trial {attrs['repeat_of']}"
    elif attrs.get("prune_reason"):
        note = f"pruned: {attrs['prune_reason']}"
    elif attrs.get("fail_reason"):
        note = f"failed: {attrs['fail_reason']}"
    elif attrs.get("worker_died"):
        note = f"worker died: {attrs['worker_died']}"
    elif attrs.get("requeued_as_waiting"):
        note = "interrupted, re-enqueued"
    else:
        note = ""
    values = dict(zip(names, t.values)) if t.values is not None else {}
    return {"trial": t.number, "state": t.state.name, **values, "test_accuracy": attrs.get("test_accuracy"),
            "note": note}


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    wd, config, study = _open(Path(args.dir))
    out = Path(args.out) if args.out else wd.root / "report"
    compare = []
    for other_dir in args.compare or []:
        _, other_config, other = _open(Path(other_dir))
        if other_config.objectives != config.objectives:
            raise UserError(f"--compare {other_dir}: its objectives {dict(other_config.objectives)} differ from "
                            f"{dict(config.objectives)}")
        compare.append((f"{'+'.join(other_config.methods)} ({other_dir})", other))
    paths = write_report(study, list(config.objectives), list(config.objectives.values()), out,
                         config.hypervolume_reference, compare=compare)
    for p in paths:
        print(p)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import describe_verification
    from .study.context import open_artifacts
    from .study.export_trial import export_trial

    wd, config, study = _open(Path(args.dir), args.artifacts)
    out = Path(args.out) if args.out else wd.root / "exports" / f"trial-{args.trial}"
    report = export_trial(wd, study, args.trial, out, artifacts=open_artifacts(config, create=False))
    print(f"exported trial {args.trial} to {out}")
    print(describe_verification(report))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install 'nas-theseus[dashboard]'") from None
    from .study.context import open_artifacts

    wd, config, study = _open(Path(args.dir), args.artifacts)  # checks the work directory and its storage first
    store = open_artifacts(config, create=False)
    print(f"serving study {study.study_name!r} on http://{args.host}:{args.port}/dashboard (Ctrl-C stops)"
          + (f"; trial networks downloadable from artifact store {store.url}" if store else ""), flush=True)
    try:
        run_server(wd.require_meta()["storage"], host=args.host, port=args.port,
                   artifact_store=store.backend if store else None)
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .study.single import convert_once

    config = _load_config(args)
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as e:
        raise UserError(f"--params is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise UserError("--params must be a JSON object of parameter names to values")
    summary = convert_once(config, _workdir(args, config), params, out=Path(args.out) if args.out else None,
                           progress=not args.no_progress)
    if summary is not None:  # None: a torchrun rank but 0, which trained with rank 0
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from .study.clean import clean

    wd, _, study = _open(Path(args.dir))
    print(f"{wd.checkpoints}: {clean(study, wd.checkpoints, max_size=args.max_size, dry_run=args.dry_run)}")
    return 0


def _cmd_library(args: argparse.Namespace) -> int:
    from .study.library_answers import answer, convert_proposals

    library, predictor, proposals, study, ctx, wd = answer(Path(args.dir), args.budget or [], top=args.top,
                                                           progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps([{"predicted_val_accuracy": p.predicted, "costs": p.costs, "ratios": p.ratios,
                           "candidate": p.candidate.to_dict(), "params": p.params} for p in proposals], indent=2))
    else:
        _print_proposals(library, predictor, proposals, ctx.guide.part_names, args.budget or [])
    if args.convert and proposals:
        numbers = convert_proposals(study, ctx, wd, proposals, progress=not args.no_progress)
        print(f"converted as trial(s) {', '.join(map(str, numbers)) or '(none: each was converted before)'}; "
              f"nas-theseus pareto {wd.root} lists them", file=sys.stderr if args.format == "json" else sys.stdout)
    return 0 if proposals else 1


def _print_proposals(library, predictor, proposals, part_names: list[str], budgets: list[str]) -> None:
    print(f"block library {library.key}: {library.build.get('blocks', len(library.options))} blocks, guide "
          f"{library.guide_accuracy:.4f} validation accuracy; {predictor.describe()}")
    if not proposals:
        print(f"no candidate of the library fits {' and '.join(budgets) or 'the budgets'}")
        return
    for rank, p in enumerate(proposals, 1):
        ratios = ", ".join(f"{v:.2f}x {name}" for name, v in p.ratios.items())
        print(f"{rank:>3}. predicted {p.predicted:.4f}  ({ratios})  {p.candidate.describe(part_names)}")
        print(f"     params {json.dumps(p.params)}")


def _add_library(sub) -> None:
    """``nas-theseus library DIR --budget flops=0.5``: the best predicted candidates for any budget."""
    p = sub.add_parser("library", help="the best candidates the block library predicts for any budget (seconds, no "
                                       "training); --convert converts them",
                       description="Answer budgets from the study's block library (docs/library.md): every block "
                                   "its search space offers, trained once alone and scored once (built first where "
                                   "missing: that trains). Prints the candidates with the best predicted validation "
                                   "accuracy within every budget, with the prediction's rank agreement (Kendall "
                                   "tau) against the study's converted trials.")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--budget", action="append", metavar="NAME=VALUE",
                   help="a bound on a cost: flops=0.5 (a ratio to the guide's), flops=abs:120000, latency=0.8 "
                        "(latency_ms: the library's summed per-module latency; needs a study that times latency); "
                        "repeatable, all must hold")
    p.add_argument("--top", type=_at_least_one, default=3, help="how many distinct candidates (best first; "
                                                                  "default 3)")
    p.add_argument("--convert", action="store_true",
                   help="convert the candidates (those not converted yet) as trials of the study, then list them")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_library)


def _size_arg(text: str) -> int:
    from .utils.sizes import parse_size

    try:
        return parse_size(text, "--max-size")
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_clean(sub) -> None:
    """``nas-theseus clean DIR``: the stage checkpoints no complete trial needs, or beyond a size, removed."""
    p = sub.add_parser("clean", help="free disk: remove stage checkpoints off every complete trial's path, or "
                                     "beyond a size",
                       description="Remove the work directory's stage checkpoints that are on no complete trial's "
                                   "path (pruned, failed, interrupted trials' stages), and with --max-size the "
                                   "least recently used others until the checkpoints fit. Only checkpoint files "
                                   "nas-theseus wrote are removed, never the study's database, trial networks, "
                                   "exports or files of yours, and none in use: while a trial runs (or waits to "
                                   "resume), nothing written or used since it started. Safe while a study runs; "
                                   "a trial that wanted a removed checkpoint trains that stage again. Prints one "
                                   "summary line.")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--max-size", type=_size_arg, metavar="SIZE",
                   help="then remove the least recently used checkpoints until they take at most SIZE (5G, 500M, "
                        "2048: bytes; K/M/G/T are powers of 1024)")
    p.add_argument("--dry-run", action="store_true", help="print what would be freed (files and bytes per kind); "
                                                          "remove nothing")
    p.set_defaults(func=_cmd_clean)


def _workers_arg(text: str):
    from .study.launcher import parse_workers

    try:
        return parse_workers(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _trial_count(text: str) -> int:
    """``--n-trials``: a whole number of trials, or 0 to prepare the study and run none; else argparse's one-line
    usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of trials, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of trials, or 0 to prepare the study and run none, "
                                         f"got {value}")
    return value


def _at_least_one(text: str) -> int:
    """A count of 1 or more (``library --top``), else argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    """An option's time (``--timeout``): a number of seconds above 0, else argparse's one-line usage error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}") from None
    if not value > 0:  # NaN included
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def _port(text: str) -> int:
    """``--port``: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-theseus", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Convert a guide network into other architectures part by part (Network of Theseus) and "
                    "search the accuracy / cost trade-off with Optuna.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_pareto, _add_trials, _add_export, _add_report, _add_dashboard, _add_convert,
                _add_clean, _add_library, _add_blocks, _add_data):
        add(sub)
    return parser


def _study_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that reads a study file (``run``, ``convert``)."""
    p.add_argument("study", help="study file (TOML), e.g. studies/mnist1d_cnn_to_mlp.toml, or the work "
                                 "directory of a study begun before (its study as recorded there)")
    p.add_argument("--workdir", help="work directory (default: runs/<study name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a study-file key, e.g. --set convert.steps_per_stage=300 (repeatable)")
    p.add_argument("--device", help="auto (the GPU where there is one, else the CPU), cpu, cuda or cuda:i "
                                     "(overrides study.device, which is auto by default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _artifacts_arg(p)


def _artifacts_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifacts", metavar="URL",
                   help="shared artifact store (file:///shared/path or s3://bucket/prefix) for trial networks, "
                        "stage checkpoints and trained guides; overrides the study's [artifacts] store")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run or continue a study (Pareto search)",
                       description="Run the study's trials until study.n_trials have finished; running it again "
                                   "continues the same study (an interrupted trial resumes from its stage "
                                   "checkpoints). Prints the Pareto front at the end. Under torchrun "
                                   "(`torchrun --nproc-per-node G -m nas_theseus run STUDY`) every trial trains on "
                                   "all G processes at once, data parallel; rank 0 talks to the storage.")
    _study_args(p)
    p.add_argument("--n-trials", type=_trial_count,
                   help="finished trials the study should reach (overrides study.n_trials); 0 prepares the study "
                        "(trains and caches the guide, makes its storage and the guide's reference) and runs no "
                        "trial, as before starting many workers")
    p.add_argument("--timeout", type=_positive_seconds, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite in the work directory)")
    p.add_argument("--force", action="store_true", help="continue even though the study file or search space changed")
    p.add_argument("--workers", type=_workers_arg, metavar="N|auto",
                   help="run N worker processes on this machine, sharing the study, each bound to one device of "
                        "--devices (round robin) with the CPU cores (and a shared GPU's memory) split among them "
                        "(default: one per device); auto: as many per device as keep it busy, measured once on "
                        "this machine (1, 2, 4, 8 workers running the study's first stage) and printed")
    p.add_argument("--devices", metavar="LIST",
                   help="with --workers: comma-separated devices, e.g. cuda:0,cuda:1 or cuda:0,cuda:0 (two workers "
                        "on one GPU); default: every visible GPU, else the CPU")
    p.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)  # set by --workers for its processes
    p.set_defaults(func=_cmd_run)


def _add_pareto(sub) -> None:
    p = sub.add_parser("pareto", help="print the Pareto front of a study")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=_cmd_pareto)


def _add_trials(sub) -> None:
    p = sub.add_parser("trials", help="list every trial: state, objective values, why it failed or was pruned")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_cmd_trials)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trial's network (safetensors, torch.export, ONNX), verified")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--trial", type=int, required=True, help="trial number (see `nas-theseus pareto DIR`)")
    p.add_argument("--out", help="output folder (default: DIR/exports/trial-N)")
    _artifacts_arg(p)
    p.set_defaults(func=_cmd_export)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write Pareto plots (PNG, HTML) and alignment curves")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--out", help="output folder (default: DIR/report)")
    p.add_argument("--compare", nargs="+", metavar="OTHER_DIR",
                   help="work directories of other studies with the same objectives (e.g. method = scratch / kd "
                        "baselines) whose fronts are drawn on the same plot, on this study's reference point")
    p.set_defaults(func=_cmd_report)


def _add_dashboard(sub) -> None:
    p = sub.add_parser("dashboard", help="serve the study in optuna-dashboard (the `dashboard` extra)",
                       description="Serve the study's storage in optuna-dashboard: trials with their candidate, "
                                   "stage reports and export command as user attributes, and the Pareto front.")
    p.add_argument("dir", help="the study's work directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8080)
    _artifacts_arg(p)
    p.set_defaults(func=_cmd_dashboard)


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="one conversion with given parameters, no search")
    _study_args(p)
    p.add_argument("--params", required=True, help="JSON object of search-space parameters (as `pareto` prints)")
    p.add_argument("--out", help="also export the converted network to this folder")
    p.set_defaults(func=_cmd_convert)


def _add_blocks(sub) -> None:
    p = sub.add_parser("blocks", help="list the registered target blocks and their options")
    p.set_defaults(func=_cmd_blocks)


def _add_data(sub) -> None:
    """``nas-theseus data pack SOURCE``: an image data set packed ahead into the cache, as a study reads it;
    ``data list`` and ``data clean``: the packs in the cache (:mod:`nas_theseus.data.pack_store`)."""
    p = sub.add_parser("data", help="prepare data ahead of a study (data pack: images into uint8 shards), list and "
                                    "clean the packs")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pack = actions.add_parser(
        "pack", help="decode an image folder or Hugging Face image dataset once into uint8 shards in the cache",
        description="Decode every image once, at the data's size and channels, into memory-mapped uint8 shards "
                    "under $NAS_THESEUS_CACHE/packed (keyed by the images and options: a study with packed = true "
                    "or \"auto\" and the same [data] reuses them). Prints one summary line.")
    pack.add_argument("source", help="a study file (its [data] is packed) or a folder of images (or, with "
                                     "--dataset hfimages, a Hugging Face dataset folder)")
    pack.add_argument("--dataset", choices=("imagefolder", "hfimages"), default="imagefolder",
                      help="how a folder SOURCE is read (default: imagefolder)")
    pack.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="a data option, e.g. --option size=64 --option channels=1 (repeatable; for a study "
                           "file, overrides its [data] option)")
    pack.set_defaults(func=_cmd_data_pack)
    listing = actions.add_parser("list", help="the packs in the cache: size, images, last use, source",
                                 description="One line per pack under $NAS_THESEUS_CACHE/packed, least recently "
                                             "used first, then the total.")
    listing.set_defaults(func=_cmd_data_list)
    clean = actions.add_parser(
        "clean", help="remove packs no study has opened for a while, or beyond a size",
        description="Remove packs killed while packing (after an hour), and with --unused-for the packs not "
                    "opened for DAYS days, then with --max-size the least recently used until the rest fit. Only "
                    "the files a pack writes are removed; a pack being written or opened is skipped. A study "
                    "that has a removed pack open keeps reading it; a later one packs the data again.")
    clean.add_argument("--unused-for", type=float, metavar="DAYS", help="remove packs not opened for DAYS days")
    clean.add_argument("--max-size", type=_size_arg, metavar="SIZE",
                       help="then the least recently used until the packs take at most SIZE (50G, 500M)")
    clean.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    clean.set_defaults(func=_cmd_data_clean)


def _cmd_data_list(args: argparse.Namespace) -> int:
    import time

    from .data.pack_store import list_packs, packs_root
    from .utils.sizes import format_size

    packs, now = list_packs(), time.time()
    for p in packs:
        print(p.line(now))
    print(f"{len(packs)} packs, {format_size(sum(p.bytes for p in packs))} under {packs_root()}")
    return 0


def _cmd_data_clean(args: argparse.Namespace) -> int:
    from .data.pack_store import clean

    if args.unused_for is not None and not args.unused_for >= 0:
        raise UserError(f"--unused-for must be a number of days >= 0, got {args.unused_for}")
    print(clean(unused_for_days=args.unused_for, max_size=args.max_size, dry_run=args.dry_run))
    return 0


def _cmd_data_pack(args: argparse.Namespace) -> int:
    from .data import load_data

    name, options = _pack_source(args)
    data = load_data(name, **{**options, "packed": True})
    if not data.config.get("packed"):
        raise UserError(f"{args.source} was not packed (the warning above says why); the source is untouched")
    print(f"{data.describe()}: packed in {data.config['packed']}")
    return 0


def _pack_source(args: argparse.Namespace) -> tuple[str, dict]:
    """The loader and options a pack is made for: a study file's [data] (paths relative to the file), or
    ``--dataset`` over the folder; ``--option`` values are JSON (a bare word is a string)."""
    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. size=64")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    source = Path(args.source)
    if source.suffix != ".toml":
        return args.dataset, {("path" if args.dataset == "hfimages" else "root"): str(source), **options}
    from .study.config import load_study_config

    config = load_study_config(str(source), [])
    base = Path(config.base_dir)
    found = {k: str((base / Path(v).expanduser()).resolve()) if k in ("root", "path") else v
             for k, v in config.data.options.items()}
    return config.data.name, {**found, **options}


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from .study.storage import close_storages

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close_storages()


if __name__ == "__main__":
    sys.exit(main())
