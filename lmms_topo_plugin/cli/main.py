"""``topo-prune``: helper commands around the lmms-eval plugin."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lmms_topo_plugin.errors import ModelArgsError, NoPassingConfiguration, UsageError
from lmms_topo_plugin.exporters.checkpoint import SAVE_DTYPES, check_destination, is_checkpoint
from lmms_topo_plugin.failures import RESTARTS, interrupts_reported_by_caller, report_failure, report_interrupt


def _parse_model_args(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ModelArgsError(f"model_args: {item!r} is not key=value")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def cmd_tasks_dir(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.calibration.sources import bundled_tasks_dir

    print(bundled_tasks_dir())
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.scorers.registry import available_methods, get_method

    print("none: the dense model, through the same wrapper")
    for name in available_methods()[1:]:
        spec = get_method(name)
        print(f"{name}: {spec.description}")
        for key, param in sorted(spec.params.items()):
            print(f"    {key} (default {param.default}): {param.help}; {param.allowed()}")
    return 0


def cmd_build_demo_model(args: argparse.Namespace) -> int:
    from lmms_topo_plugin import synthbench
    from lmms_topo_plugin.testing.tiny_models import build_tiny_vlm

    path = build_tiny_vlm(args.family, args.out, num_layers=args.layers, hidden_size=args.hidden_size,
                          seed=args.seed, vocab_words=synthbench.vocabulary())
    print(path)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.exporters.checkpoint import save_checkpoint, save_dtype
    from lmms_topo_plugin.exporters.export import dtype_name
    from lmms_topo_plugin.models.loading import load_config, resolve_pretrained
    from lmms_topo_plugin.reports import write_report

    model_args = _parse_model_args(args.model_args)
    if args.save:
        check_destination(args.save, "--save", overwrite=True)  # a previous checkpoint there is replaced whole
    loaded, report = load_pruned(model_args)
    for path in write_report(report, Path(args.report_dir)):
        print(f"report: {path}")
    if args.save:
        base = load_config(resolve_pretrained(model_args.get("pretrained")), model_args.get("revision"))
        dtype = save_dtype(args.save_dtype, getattr(base, "dtype", None))
        save_checkpoint(loaded.model, loaded.processor, args.save, dtype)
        print(f"pruned checkpoint ({dtype_name(dtype or loaded.model.dtype)}): {args.save}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.exporters.export import export_model_args, export_pareto, export_winner, holds_pareto_export

    if sum(map(bool, (args.winner, args.model_args, args.pareto))) != 1:
        raise ModelArgsError("export: give exactly one of --winner (a sweep's winner.json), --pareto (a sweep "
                             "directory) or --model-args")
    precisions = onnx_precisions(args.precision) if args.onnx else ()
    check_destination(args.out, "--out", args.overwrite, holds_pareto_export if args.pareto else is_checkpoint)
    if args.pareto:
        index = export_pareto(args.pareto, args.out, args.save_dtype, precisions)
        for entry in json.loads(index.read_text())["configurations"]:
            print(f"{Path(args.out) / entry['dir']}: {entry['method']} at {entry['budget']:g}, removes "
                  f"{entry['removed_layers']}, {entry['metric']} {entry['value']:.3f}")
        print(f"index: {index}")
        return 0
    check = None
    if args.onnx:
        from lmms_topo_plugin.exporters.onnx.graphs import check_supported as check
    if args.winner:
        out = export_winner(args.winner, args.out, args.save_dtype, precisions, check)
    else:
        out = export_model_args(_parse_model_args(args.model_args), args.out, args.save_dtype, precisions, check)
    report = json.loads((out / "export_report.json").read_text())
    print(f"checkpoint: {out} ({report['num_layers']} decoder layers, {report['dtype']}; reloaded logits within "
          f"{report['max_abs_logit_difference']:.1g} of the pruned model)")
    if args.onnx:
        onnx = report["onnx"]
        print(f"onnx: {out / 'onnx'} (fp32; max logit difference to PyTorch {onnx['max_abs_logit_difference']:.1g}, "
              f"greedy tokens identical: {onnx['greedy_tokens_identical']})")
        for precision, variant in onnx["variants"].items():
            print(f"onnx {precision}: max logit difference to fp32 {variant['max_abs_logit_difference_vs_fp32']:.3g}, "
                  f"greedy tokens agreeing with fp32 {variant['greedy_token_agreement_vs_fp32']:.0%}")
    return 0


def onnx_precisions(text: str) -> tuple[str, ...]:
    """``--precision fp32,fp16,int4`` → ``("fp32", "fp16", "int4")``; fp32 is always built (the others derive from it)."""
    from lmms_topo_plugin.exporters.onnx.precision import PRECISIONS

    asked = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in asked if item not in PRECISIONS]
    if unknown:
        raise ModelArgsError(f"--precision: {unknown[0]!r} is not one of {', '.join(PRECISIONS)}")
    return ("fp32", *[precision for precision in PRECISIONS[1:] if precision in asked])


def read_image(path: str):
    """The image file at ``path``, decoded; a one-line :class:`UsageError` for a missing file or a non-image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise UsageError(f"--image {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--image {path} is a directory; give an image file (PNG, JPEG, ...)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):  # PIL's decoders raise all of these
        raise UsageError(f"--image {path} is not an image file Pillow can read; give a PNG or JPEG (topo-prune "
                         "example-image writes one)") from None


def cmd_onnx_generate(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM, check_build
    from lmms_topo_plugin.models.prompting import Prompt

    check_build(args.build)
    if args.benchmark and (args.repeats < 1 or args.max_new_tokens < 1):
        raise UsageError("--benchmark needs --repeats and --max-new-tokens of at least 1")
    images = [read_image(path) for path in args.image]
    runner = OnnxVLM(args.build, provider=args.provider, allow_cpu_fallback=args.allow_cpu_fallback,
                     precision=args.precision)
    prompt = Prompt.from_text(args.prompt, images)
    (text,) = runner.generate([prompt], max_new_tokens=args.max_new_tokens)
    print(text)
    if args.benchmark:
        costs = runner.benchmark(prompt, args.max_new_tokens, args.repeats)
        print(f"benchmark: provider {runner.device_type}, precision {args.precision}, {costs['prompt_tokens']} prompt "
              f"tokens, {costs['new_tokens']} new tokens, medians of {costs['repeats']} runs after a warm-up")
        print(f"prefill: {costs['prefill_s'] * 1e3:.3f} ms")
        print(f"decode: {costs['decode_s_per_token'] * 1e3:.3f} ms/token")
        print(f"throughput: {costs['tokens_per_s']:.1f} tokens/s")
    return 0


def cmd_example_image(args: argparse.Namespace) -> int:
    """Write image ``--index`` of a bundled benchmark split to OUT; print its prompt (exactly what the topo_synth
    tasks give the model, so the bundled model answers in the benchmark's format) and, on stderr, its answer."""
    import base64

    from lmms_topo_plugin.cache import atomic_write_bytes
    from lmms_topo_plugin.synthbench import KINDS, prompt_for
    from lmms_topo_plugin.synthbench.storage import read_records

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give the image file to write, e.g. {out / 'example.png'}")
    records = [record for kind in KINDS for record in read_records(args.split, kind)]
    if not 0 <= args.index < len(records):
        raise UsageError(f"--index {args.index} is out of range: the {args.split} split has {len(records)} images "
                         f"(--index 0 to {len(records) - 1})")
    record = records[args.index]
    atomic_write_bytes(out, base64.b64decode(record["image"]))  # the stored PNG, byte for byte
    print(prompt_for(record))
    print(f"{out}: expected answer: {record['answer']}", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.exporters.hub import PushRequest, push

    result = push(PushRequest(
        build=Path(args.build), repo_id=args.repo_id, private=args.private, exist_ok=args.exist_ok,
        dry_run=args.dry_run, endpoint=args.endpoint, token=args.token, revision=args.revision,
        commit_message=args.commit_message, license=args.license, base_model=args.base_model))
    if result["commit_url"]:
        print(f"pushed: {result['commit_url']}")
    return 0


def cmd_regimes(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.search.regimes import RegimeRule, write_regimes

    rule = RegimeRule(sensitive_spread=args.sensitive_spread, spacing_margin=args.spacing_margin)
    report = write_regimes(Path(args.sweep), args.metric, rule, Path(args.out) if args.out else None)
    for entry in report["budgets"]:
        print(f"budget {entry['budget']:g}: {entry['regime']} (spread {entry['spread']:.3f}, layer overlap "
              f"{entry['layer_overlap']:.2f}, best {', '.join(entry['best'])})")
    out = Path(args.out or args.sweep)
    print(f"regimes: {out / 'regimes.md'} (and regimes.json, regimes.png)")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.api import score_layers
    from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json
    from lmms_topo_plugin.scorers.registry import get_method

    if args.what == "entropy":
        return analyze_entropy(args)
    model_args = {**_parse_model_args(args.model_args), "method": args.what}
    if "sparsity" not in model_args:
        model_args.setdefault("n_remove", "0")  # scoring only
    scores, summary = score_layers(model_args)
    out = Path(args.out)
    atomic_write_json(out / f"{args.what}_scores.json", {**summary, "scores": scores.to_json()})
    print(f"scores: {out / f'{args.what}_scores.json'}")
    for name, png in get_method(args.what).scorer_class.report_plots(scores, []).items():
        atomic_write_bytes(out / f"{args.what}_{name}.png", png)
        print(f"plot: {out / f'{args.what}_{name}.png'}")
    return 0


def analyze_entropy(args: argparse.Namespace) -> int:
    """``analyze --what entropy``: HalfV's visual-token lifecycle on the calibration prompts (default 100)."""
    from lmms_topo_plugin.api import load_pruned
    from lmms_topo_plugin.cache import atomic_write_bytes, atomic_write_json
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.pipeline import calibration_prompts
    from lmms_topo_plugin.tokens.lifecycle import analyze_lifecycle, lifecycle_png

    model_args = _parse_model_args(args.model_args)
    config = PruneConfig.from_model_args(model_args)
    prompts = calibration_prompts(config, config.calib_limit or 100)
    loaded, _ = load_pruned(model_args)
    report = analyze_lifecycle(loaded.adapter, loaded.processor, prompts, k=args.entropy_k,
                               batch_size=config.calib_batch_size, kl_threshold=args.kl_threshold)
    out = Path(args.out)
    atomic_write_json(out / "entropy.json", {"pretrained": loaded.source, "calibration": config.calibration_source,
                                             **report})
    atomic_write_bytes(out / "entropy.png", lifecycle_png(report))
    print(f"IVR layer {report['ivr_layer']}, SSR layer {report['ssr_layer']} (mode {report['ssr_mode']}): "
          f"{out / 'entropy.json'}, {out / 'entropy.png'}")
    return 0


def cmd_install_topology(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.cli.install_topology import install_topology

    return install_topology(args.requirement, args.pip_options, dry_run=args.dry_run)


def add_install_topology_parser(commands) -> None:
    topology = commands.add_parser("install-topology", help="make method=topology work: build dionysus from source "
                                   "(and, as root on Debian/Ubuntu, apt-get its compiler and Boost headers), or "
                                   "print the steps this platform needs")
    topology.add_argument("--requirement", help="what pip installs (default dionysus==2.2.3)")
    topology.add_argument("--dry-run", "--dry_run", action="store_true",
                          help="only print what is found and what would run")
    topology.add_argument("pip_options", nargs="*", metavar="-- PIP_OPTION",
                          help="extra `pip install` options, after -- (e.g. -- --no-deps)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topo-prune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tasks-dir", help="print the bundled task directory (for lmms-eval --include_path)")
    commands.add_parser("methods", help="list the pruning methods and their parameters")
    demo = commands.add_parser("build-demo-model", help="build a small random-weight VLM for smoke runs")
    demo.add_argument("out", help="output directory")
    demo.add_argument("--family", default="llava", help="architecture family (llava, llava_next, qwen2_vl, qwen2_5_vl, idefics3)")
    demo.add_argument("--layers", type=int, default=8, help="decoder layers")
    demo.add_argument("--hidden-size", type=int, default=64, help="decoder width")
    demo.add_argument("--seed", type=int, default=0)
    prune = commands.add_parser("prune", help="prune a model as model_args describe; write the report, optionally save")
    prune.add_argument("--model-args", "--model_args", required=True, help="the same key=value,... string lmms-eval takes")
    prune.add_argument("--report-dir", default="topo_prune_reports")
    prune.add_argument("--save", help="save the pruned checkpoint (from_pretrained-loadable) here")
    prune.add_argument("--save-dtype", default="base", choices=SAVE_DTYPES,
                       help="dtype of the saved weights (default: the base checkpoint's, e.g. float16)")
    analyze = commands.add_parser("analyze", help="score every layer without pruning; write the scores JSON and plots")
    analyze.add_argument("--what", default="topology", help="the method whose scores to compute (default topology), "
                         "or entropy: HalfV's visual-token lifecycle (TME curves, IVR/SSR layers, freezing KL)")
    analyze.add_argument("--model-args", "--model_args", default="", help="key=value,... as for lmms-eval (pretrained=, calib_*, topo_*)")
    analyze.add_argument("--out", default="topo_analysis", help="output directory")
    analyze.add_argument("--entropy-k", "--entropy_k", type=int, default=50,
                         help="--what entropy: eigenvalues kept in the truncated matrix entropy")
    analyze.add_argument("--kl-threshold", "--kl_threshold", type=float, default=1e-3,
                         help="--what entropy: freezing KL at the SSR layer up to which the SSR mode is freeze")
    add_sweep_parser(commands)
    export = commands.add_parser("export", help="rebuild a sweep's winner (or a model_args configuration) and save it "
                                 "as a from_pretrained checkpoint, validated by reloading it")
    export.add_argument("--winner", help="a sweep's winner.json (its exact removed layers are re-applied)")
    export.add_argument("--pareto", help="a sweep directory: export every configuration on its front (metric "
                        "against removed layers), each into OUT/<method>-<budget>-<calibration>, with OUT/index.json")
    export.add_argument("--model-args", "--model_args", help="instead of --winner: key=value,... as for lmms-eval")
    export.add_argument("--out", required=True, help="checkpoint directory (with --pareto: the folder of "
                        "checkpoints); one that holds an export is refused unless --overwrite")
    export.add_argument("--overwrite", action="store_true", help="replace the export already in --out (its "
                        "checkpoint, onnx/ and the README.md a push wrote), after the new one validates")
    export.add_argument("--save-dtype", default="base", choices=SAVE_DTYPES,
                        help="dtype of the saved weights (default: the base checkpoint's)")
    export.add_argument("--onnx", action="store_true", help="also write the ONNX build (vision_encoder, "
                        "embed_tokens, decoder_model_merged with KV cache) to OUT/onnx, validated against PyTorch")
    export.add_argument("--precision", default="fp32", help="with --onnx: comma-separated fp32, fp16, int4 "
                        "(*_fp16.onnx, *_q4.onnx weight-only MatMulNBits); fp32 is always written")
    generate = commands.add_parser("onnx-generate", help="answer one prompt with an ONNX build (ONNX Runtime)")
    generate.add_argument("build", help="a directory written by topo-prune export --onnx")
    generate.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=32)
    generate.add_argument("--provider", default="auto", help="auto (CUDA when onnxruntime-gpu sees a GPU), cuda, cpu")
    generate.add_argument("--precision", default="fp32", help="fp32, fp16 or int4 (as exported)")
    generate.add_argument("--allow-cpu-fallback", action="store_true",
                          help="accept a session that ONNX Runtime put on the CPU instead of the requested provider")
    generate.add_argument("--benchmark", action="store_true", help="after the answer, print the prefill latency, "
                          "the decode latency per token and tokens per second (medians of --repeats runs after a "
                          "warm-up, each decoding --max-new-tokens tokens), with the provider and precision")
    generate.add_argument("--repeats", type=int, default=5, help="with --benchmark: timed runs (default 5)")
    example = commands.add_parser("example-image", help="write one image of the bundled benchmark to OUT, print "
                                  "its question on stdout (the prompt the bundled model is evaluated with) and the "
                                  "expected answer on stderr")
    example.add_argument("out", metavar="OUT", help="image file to write (PNG), e.g. example.png")
    example.add_argument("--index", type=int, default=0, help="which document of the split: the kinds presence, "
                         "attribute, count, spatial, math in turn, 100 each in test and dev, 64 in calib (default 0)")
    example.add_argument("--split", default="test", choices=("test", "dev", "calib"), help="benchmark split")
    add_push_parser(commands)
    add_install_topology_parser(commands)
    regimes = commands.add_parser("regimes", help="mark each budget of a finished sweep as ranking-sensitive, "
                                  "converging or continuity-dominated; write regimes.{json,md,png}")
    regimes.add_argument("sweep", help="a directory written by topo-prune sweep")
    regimes.add_argument("--metric", help="task/metric (default: the sweep's)")
    regimes.add_argument("--sensitive-spread", "--sensitive_spread", type=float, default=0.10,
                         help="spread (max - min of the metric over methods) from which a budget is ranking-sensitive")
    regimes.add_argument("--spacing-margin", "--spacing_margin", type=float, default=0.01,
                         help="by how much spacing must beat every other method for continuity-dominated")
    regimes.add_argument("--out", help="output directory (default: the sweep directory)")
    return parser


def add_push_parser(commands) -> None:
    push = commands.add_parser("push", help="publish an export (checkpoint, onnx/, plots, reports) and its generated "
                               "model card to the Hugging Face Hub in one commit")
    push.add_argument("build", help="a directory written by topo-prune export")
    push.add_argument("--repo-id", "--repo_id", required=True, help="<user or organisation>/<name>")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--exist-ok", "--exist_ok", action="store_true",
                      help="push to a repository that already has files (its files the build lacks are deleted)")
    push.add_argument("--dry-run", "--dry_run", action="store_true",
                      help="write the card to BUILD/README.md, print the files and the commit message; send nothing")
    push.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored `hf auth login` token)")
    push.add_argument("--revision", default="main", help="branch to commit to (it must exist)")
    push.add_argument("--commit-message", "--commit_message", help="default: what was removed, by which method")
    push.add_argument("--license", help="license id for the card (default: the base model card's; required "
                      "when that states none)")
    push.add_argument("--base-model", "--base_model", metavar="ID", help="the base model's Hub id "
                      "(<user or organisation>/<name>) for the card's base_model metadata, or none to publish "
                      "without it (default: the pruning record's base when it is a Hub id; required when the base "
                      "is a local directory or the bundled default model)")


def add_sweep_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="score once, evaluate every method x budget through lmms-eval, measure "
                                "speed and memory, pick the winner under a rule; resumable")
    sweep.add_argument("--model-args", "--model_args", default="", help="base model_args (pretrained=, device=, "
                       "dtype=, ...; default: the bundled model); method/sparsity come from --methods/--budgets")
    sweep.add_argument("--methods", default="topology,block_influence,angular,random,spacing",
                       help="comma-separated layer methods (topo-prune methods lists them); a variant sets "
                       "parameters for one entry: topology[topo_k=5,topo_alpha=2] is its own line in the results")
    sweep.add_argument("--budgets", default="0.125,0.25,0.375,0.5", help="comma-separated sparsities in (0, 1)")
    sweep.add_argument("--calib-limits", "--calib_limits", default="",
                       help="comma-separated calibration sizes to sweep too (default: each method's own)")
    sweep.add_argument("--tasks", default="topo_synth", help="comma-separated lmms-eval tasks or groups")
    sweep.add_argument("--include-path", "--include_path", help="extra lmms-eval task directory")
    sweep.add_argument("--limit", type=float, help="documents per task (an integer count, or a fraction < 1)")
    sweep.add_argument("--rule", default="keep>=0.95",
                       help="keep>=X: at least X times the dense metric; metric>=V: at least V (default keep>=0.95)")
    sweep.add_argument("--metric", help="task/metric the rule reads, as lmms-eval names it "
                       "(default: the first task's metric when it has one)")
    sweep.add_argument("--objective", default="layers", help="among passing configurations: layers (most removed), "
                       "latency (lowest measured prefill), params (fewest parameters)")
    sweep.add_argument("--cost-repeats", "--cost_repeats", type=int, default=5,
                       help="timed repeats per configuration (median reported, after a warm-up)")
    sweep.add_argument("--out", default="sweep", help="output directory (re-run the same command to resume)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from lmms_topo_plugin.distributed import rank
    from lmms_topo_plugin.search import SweepSpec, run_sweep
    from lmms_topo_plugin.search.rules import SweepArgsError
    from lmms_topo_plugin.search.variants import split_methods

    def listed(text: str, convert, flag: str) -> list:
        try:
            return [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise SweepArgsError(f"{flag}: {text!r} is not a comma-separated list of {convert.__name__}s") from None

    limit = args.limit if args.limit is None or args.limit < 1 else int(args.limit)
    spec = SweepSpec(
        model_args=_parse_model_args(args.model_args), methods=split_methods(args.methods),
        budgets=listed(args.budgets, float, "--budgets"), tasks=listed(args.tasks, str, "--tasks"),
        out=Path(args.out), rule=args.rule, metric=args.metric, objective=args.objective,
        calib_limits=listed(args.calib_limits, int, "--calib-limits") or [None], include_path=args.include_path,
        limit=limit, cost_repeats=args.cost_repeats,
    )
    result = run_sweep(spec)
    if rank() != 0:  # under torchrun: rank 0 writes and judges
        return 0
    print(f"results: {spec.out / 'results.md'} (and results.csv, pareto.png)")
    if result["winner"] is None:
        raise NoPassingConfiguration(f"no configuration passes {args.rule} on {result['metric']}; "
                                     f"see {spec.out / 'results.md'}")
    winner = result["winner"]
    print(f"winner: {winner['method']} at {winner['budget']:g} (removes {winner['removed_layers']}): "
          f"{spec.out / 'winner.json'}")
    return 0


COMMANDS = {"tasks-dir": cmd_tasks_dir, "methods": cmd_methods, "build-demo-model": cmd_build_demo_model,
            "prune": cmd_prune, "analyze": cmd_analyze, "sweep": cmd_sweep,
            "export": cmd_export, "onnx-generate": cmd_onnx_generate, "example-image": cmd_example_image,
            "push": cmd_push, "regimes": cmd_regimes, "install-topology": cmd_install_topology}

# What re-running does after Ctrl-C, by command (the rest start over and cache nothing).
ON_INTERRUPT = {
    "sweep": "re-run the same command to resume (finished configurations are kept)",
    "export": f"no half-written checkpoint was left in --out; {RESTARTS}",
    "prune": RESTARTS,
    "analyze": RESTARTS,
}


def main(argv: list[str] | None = None) -> int:
    """Run a command; any failure prints one line on stderr and returns its exit code (lmms_topo_plugin.errors).

    Tracebacks go to the debug log: ``LOGURU_LEVEL=DEBUG topo-prune ...`` shows them. Ctrl-C prints one line
    saying what re-running does (:data:`ON_INTERRUPT`) and returns 130.
    """
    command = None
    try:
        from loguru import logger

        args = build_parser().parse_args(argv)
        command = args.command
        logger.remove()
        logger.add(sys.stderr, level=os.environ.get("LOGURU_LEVEL", "INFO"))
        with interrupts_reported_by_caller():
            return COMMANDS[command](args)
    except KeyboardInterrupt:
        what = f"{command} interrupted" if command else "interrupted"
        return report_interrupt(f"topo-prune: {what}; {ON_INTERRUPT.get(command, 're-running starts over')}")
    except Exception as error:
        return report_failure(error, f"topo-prune {command}" if command else "topo-prune", "topo-prune")


if __name__ == "__main__":
    sys.exit(main())
