"""The sweep: load once, score each method once, evaluate every budget through lmms-eval, measure, pick a winner.

Per method (and calibration size) the scores come from one calibration pass (cached like a single run); every
budget's plan is then :func:`~lmms_topo_plugin.plan.plan_layers` of those scores, applied with
:func:`~lmms_topo_plugin.surgery.layers.layers_removed` to the one loaded model (the same surgery a saved checkpoint
gets, undone after the evaluation). A width method (``comp``) searches once per budget (cached) and its plan is
applied with :func:`~lmms_topo_plugin.surgery.widths.widths_sliced`, its visual-token pruning attached. Every
configuration is evaluated by lmms-eval's ``simple_evaluate`` and measured
(:mod:`~lmms_topo_plugin.search.measure`, prefill FLOPs included) side by side with the dense reference. An entry
with ``recover=kd`` (``m[recover=kd]``, or every pruned entry with ``recover=kd`` in ``--model-args``; never the
dense reference) is recovered after its plan is applied (:func:`recovered`: the teacher's targets come from the dense
model once per prompts, the recovered weights are cached like a single run's and restored after the evaluation).
Each configuration's result is written atomically to ``<out>/configs/`` as it finishes, so a re-run evaluates only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from lmms_topo_plugin.records import PARETO
from lmms_topo_plugin.cache import DiskCache, atomic_write_json, cache_key
from lmms_topo_plugin.calibration.sources import prompts_fingerprint
from lmms_topo_plugin.config.params import params_of
from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.config.recovery import RECOVER_NONE, RecoveryConfig
from lmms_topo_plugin.distributed import compute_on_rank0, join_launched_processes, rank
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.models.loading import LoadedModel, load_model
from lmms_topo_plugin.pipeline import (Prepared, check_width_budget, compute_scores, compute_widths,
                                       model_fingerprint, prepare)
from lmms_topo_plugin.plan import layer_budget, method_scorer, plan_from_record, plan_layers, plan_widths
from lmms_topo_plugin.scorers.registry import DENSE_METHOD
from lmms_topo_plugin.surgery.layers import layers_removed
from lmms_topo_plugin.surgery.widths import widths_sliced
from lmms_topo_plugin.tokens import from_record, token_pruner
from lmms_topo_plugin.integrations.lmms_eval.evaluate import available_metrics, evaluate, flatten_results, load_tasks
from lmms_topo_plugin.integrations.lmms_eval.tasks import task_manager
from lmms_topo_plugin.search.measure import default_cost_prompt, measure_cost
from lmms_topo_plugin.search.outputs import (
    pareto_png, render_markdown, render_skipped, results_table, winner_record, write_csv, write_if_changed,
    write_markdown, write_winner,
)
from lmms_topo_plugin.search.rules import (
    Rule, check_metric, is_dense, pareto_front, parse_objective, parse_rule, pick_winner,
)
from lmms_topo_plugin.search.variants import file_stem, parse_variant

SWEEP_KEYS = ("method", "sparsity", "n_remove", "calib_limit")  # set by the sweep, not by --model-args
RECOVERY_KEYS = frozenset(params_of(RecoveryConfig))  # recover=, recover_*: for pruned entries only
RECOVERY_RUN_KEYS = ("seed", "calib_task", "include_path")  # what else the recovered weights depend on


@dataclass
class SweepSpec:
    """What to sweep and how to judge it; validated by :func:`validate` before any weights load."""

    model_args: dict[str, str]
    methods: list[str]
    budgets: list[float]
    tasks: list[str]
    out: Path
    rule: str = "keep>=0.95"
    metric: str | None = None
    objective: str = "layers"
    calib_limits: list[int | None] = field(default_factory=lambda: [None])
    include_path: str | None = None
    limit: int | float | None = None
    cost_repeats: int = 5


@dataclass
class Configuration:
    """One point of the sweep: a validated config (dense when ``method == "none"``) and its identity."""

    config: PruneConfig
    budget: float
    calib_limit: int | None
    variant: str = DENSE_METHOD  # the --methods entry as written (see :mod:`.variants`)
    key: str = ""

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def label(self) -> str:
        calib = f", calib_limit={self.calib_limit}" if self.calib_limit else ""
        if self.variant == DENSE_METHOD:
            return "dense"
        return self.variant if self.method == DENSE_METHOD else f"{self.variant} at {self.budget:g}{calib}"

    @property
    def path_stem(self) -> str:
        return f"{file_stem(self.variant)}-{self.budget:g}-{self.calib_limit or 'default'}-{self.key[:10]}"


def configurations(spec: SweepSpec) -> list[Configuration]:
    """Dense first, then every method (or variant) × calibration size × budget, each parsed like ``--model_args``."""
    if "token_method" in spec.model_args:
        raise ModelArgsError("--model-args: token_method= would prune the dense reference too; set it per entry: "
                             "--methods 'none[token_method=halfv,token_layer=4,token_ssr_mode=off],block_influence[token_method=fastv]'")
    clash = sorted(set(spec.model_args) & set(SWEEP_KEYS))
    if clash:
        raise ModelArgsError(f"--model-args: {clash[0]}= is set by the sweep (--methods, --budgets, --calib-limits); "
                             "remove it")
    if len(set(spec.methods)) != len(spec.methods):
        raise ModelArgsError(f"--methods: {spec.methods} lists an entry twice")
    dense = Configuration(PruneConfig.from_model_args(without_recovery(spec.model_args)), 0.0, None)
    points = [dense]
    for entry in spec.methods:
        method, params = parse_variant(entry)
        clash = sorted(set(params) & set(SWEEP_KEYS))
        if clash:
            raise ModelArgsError(f"--methods: {entry}: {clash[0]}= cannot be set per method")
        tokens = {key: value for key, value in params.items() if key.startswith("token_")}
        if tokens.get("token_method") == "halfv" and PruneConfig.from_model_args(tokens).needs_token_detection:
            raise ModelArgsError(f"--methods: {entry}: token_method=halfv needs its stages in a sweep: token_layer= "
                                 "and token_ssr_mode=off, or token_ssr_mode=freeze|top5 with token_ssr_layer= (its "
                                 "IVR and SSR layers and mode: `topo-prune analyze --what entropy` detects them)")
        if method == DENSE_METHOD:  # token pruning alone: no layer budget, evaluated once
            if "token_method" not in params:
                raise ModelArgsError(f"--methods: {entry}: the dense model is always evaluated; none[...] is for "
                                     "token pruning alone (token_method=...)")
            points.append(Configuration(PruneConfig.from_model_args({**without_recovery(spec.model_args), **params}),
                                        0.0, None, entry))
            continue
        for calib_limit in spec.calib_limits:
            for budget in spec.budgets:
                args = {**entry_model_args(spec.model_args, params), "method": method, "sparsity": budget}
                if calib_limit is not None:
                    args["calib_limit"] = calib_limit
                points.append(Configuration(PruneConfig.from_model_args(args), budget, calib_limit, entry))
    shared = sorted(RECOVERY_KEYS & set(spec.model_args))
    if shared and not any(point.config.recovery.enabled for point in points):
        raise ModelArgsError(f"--model-args: {shared[0]}= applies to the entries that recover, and none does: add "
                             "recover=kd to --model-args (every pruned entry) or to an entry (name[recover=kd])")
    return points


def without_recovery(model_args: dict[str, str]) -> dict[str, str]:
    """``model_args`` less ``recover=`` and ``recover_*``: the dense reference is never recovered."""
    return {key: value for key, value in model_args.items() if key not in RECOVERY_KEYS}


def entry_model_args(model_args: dict[str, str], params: dict[str, str]) -> dict[str, str]:
    """The model_args of a pruned ``--methods`` entry: the shared ones with the entry's on top; shared ``recover_*``
    keys only where the entry recovers (``recover=kd`` shared or its own), so ``--model-args recover_steps=50
    --methods "m,m[recover=kd]"`` and ``--model-args recover=kd --methods "m[recover=none],m"`` both give ``m`` with
    and without recovery."""
    merged = {**model_args, **params}
    if merged.get("recover", RECOVER_NONE) != RECOVER_NONE:
        return merged
    return {**without_recovery(model_args), **params}


def recovery_args(config: PruneConfig) -> dict[str, Any] | None:
    """What a recovered configuration's weights depend on besides its plan, as typed ``model_args`` values (every
    ``recover*`` key, the seed and the recovery data's source): the sweep's key, the row and ``export --winner``
    (:meth:`PruneConfig.with_values`) read it; None without recovery."""
    if not config.recovery.enabled:
        return None
    return config.recovery.model_args() | {"seed": config.run.seed, "calib_task": config.calibration.calib_task,
                                           "include_path": config.calibration.include_path}


def run_sweep(spec: SweepSpec) -> dict[str, Any]:
    """Run (or resume) the sweep; write the tables, plot and ``winner.json``; return rows and winner.

    A run that evaluates something also writes ``sweep.json``: its wall time, the one model load, and counts.
    """
    started = time.perf_counter()
    rule, objective = parse_rule(spec.rule), parse_objective(spec.objective)
    points = configurations(spec)
    device = join_launched_processes()  # under torchrun / accelerate launch: evaluation is data-parallel
    for point in points:
        if device and not point.config.load.device_map:
            point.config = point.config.with_values(device=device)
    manager = task_manager(spec.include_path)
    metrics = available_metrics(load_tasks(spec.tasks, manager))
    metric = spec.metric or default_metric(spec.tasks, metrics)
    check_metric(metric, metrics)
    dense = prepare(points[0].config)
    identity = sweep_identity(spec, dense)
    feasible, skipped = split_feasible(points, dense.num_layers)
    groups = prepare_groups(feasible)
    feasible, unreachable = split_reachable_widths(feasible, groups)
    skipped += unreachable
    for point in points:
        tokens = [point.config.token_pruning] if point.config.tokens is not None else []  # absent: keys of older sweeps
        recovery = [recovery_args(point.config)] if point.config.recovery.enabled else []  # absent: older sweeps
        point.key = cache_key("sweep-config", identity, point.method, point.budget, point.calib_limit,
                              point.config.method_params, point.config.run.seed, *tokens, *recovery)
    rows = reusable_results(feasible, spec.out)
    missing = len([point for point in feasible if point.key not in rows])
    if missing:
        recovery_sets = draw_recovery_sets([point for point in feasible if point.key not in rows])  # before loading
        start = time.perf_counter()
        loaded = load_model(points[0].config.load, dense.pretrained, dense.hf_config)
        load_s = time.perf_counter() - start
        rows.update(evaluate_missing(spec, feasible, rows, groups, loaded, manager,
                                     Recovering(identity["model"], recovery_sets)))
        if rank() == 0:
            atomic_write_json(spec.out / "sweep.json", {
                "wall_s": time.perf_counter() - started, "load_s": load_s, "evaluated": missing,
                "reused": len(feasible) - missing, "skipped": len(skipped), **identity})
    say(f"{missing} configuration(s) evaluated, {len(feasible) - missing} reused, {len(skipped)} not reachable")
    if rank() != 0:
        return {"rows": [], "skipped": skipped, "winner": None, "metric": metric}
    ordered = [rows[point.key] for point in feasible]
    winner = pick_winner(ordered, rule, objective, metric)
    write_outputs(spec, ordered, skipped, rule, objective, metric, winner, identity)
    return {"rows": ordered, "skipped": skipped, "winner": winner, "metric": metric}


def default_metric(tasks: list[str], metrics: set[str]) -> str:
    """The first task's only metric when it has one; otherwise the user must say which (``--metric``)."""
    from lmms_topo_plugin.search.rules import SweepArgsError

    own = sorted(name for name in metrics if name.split("/", 1)[0] == tasks[0])
    if len(own) != 1:
        raise SweepArgsError(f"--metric is required: {tasks[0]} reports {', '.join(own) or 'no metric'}")
    return own[0]


def sweep_identity(spec: SweepSpec, dense: Prepared) -> dict[str, Any]:
    """What every configuration's result depends on besides its own method and budget."""
    return {
        "model": model_fingerprint(dense.pretrained, dense.hf_config, dense.config.load.revision),
        "model_args": {key: spec.model_args[key] for key in sorted(without_recovery(spec.model_args))},
        "tasks": list(spec.tasks),
        "limit": spec.limit,
        "cost_repeats": spec.cost_repeats,
        "lmms_topo_plugin": version("lmms-topo-plugin"),
        "lmms_eval": version("lmms-eval"),
    }


def _split(points: list[Configuration], check: Callable[[Configuration], None]) -> tuple[list[Configuration], list[dict]]:
    """The points ``check`` accepts; the others skipped with the reason its ModelArgsError gives."""
    feasible, skipped = [], []
    for point in points:
        try:
            check(point)
        except ModelArgsError as error:
            skipped.append({"method": point.method, "variant": point.variant, "budget": point.budget,
                            "calib_limit": point.calib_limit,
                            "reason": str(error).removeprefix("model_args: ")})
            continue
        feasible.append(point)
    return feasible, skipped


def split_feasible(points: list[Configuration], num_layers: int) -> tuple[list[Configuration], list[dict]]:
    """The configurations a method can reach; the others (e.g. ``spacing`` past half the layers) are skipped,
    with the reason, instead of failing the sweep."""
    return _split(points, lambda point: layer_budget(point.config.layers, num_layers, method_scorer(point.config)))


def split_reachable_widths(points: list[Configuration], groups: dict[tuple, Prepared]) -> tuple[list[Configuration], list[dict]]:
    """Width-method budgets their search can reach on this model (counted before loading); the others skipped."""
    def check(point: Configuration) -> None:
        if point.method != DENSE_METHOD:
            check_width_budget(groups[(point.variant, point.calib_limit)], point.config)
    return _split(points, check)


def prepare_groups(points: list[Configuration]) -> dict[tuple, Prepared]:
    """One prepared scorer and calibration set per (variant, calibration size): every check before weights load."""
    groups: dict[tuple, Prepared] = {}
    for point in points:
        group = (point.variant, point.calib_limit)
        if point.method != DENSE_METHOD and group not in groups:
            groups[group] = prepare(point.config, check_widths=False)  # per point: split_reachable_widths
    return groups


def reusable_results(points: list[Configuration], out: Path) -> dict[str, dict]:
    """Results already in ``out/configs`` for exactly these configurations (same key): a resumed sweep skips them."""
    rows = {}
    for point in points:
        path = out / "configs" / f"{point.path_stem}.json"
        if path.exists():
            row = json.loads(path.read_text())
            if row.get("key") == point.key:
                rows[point.key] = row
                say(f"reusing {point.label} ({path})")
    return rows


@dataclass
class Recovering:
    """What the sweep's recovered configurations share: the dense model's fingerprint, the recovery prompts drawn
    before the weights loaded (:func:`draw_recovery_sets`) and the teachers computed so far (one per prompts and
    teacher settings, on the dense model)."""

    model_id: str = ""
    data: dict[tuple, Any] = field(default_factory=dict)
    teachers: dict[tuple, Any] = field(default_factory=dict)


def recovery_data_key(config: PruneConfig) -> tuple:
    """What the recovery prompts of ``config`` depend on (:func:`lmms_topo_plugin.api.draw_recovery_data`)."""
    return (config.recovery.recover_samples, config.run.seed, config.calibration.calib_task,
            config.calibration.include_path)


def draw_recovery_sets(points: list[Configuration]) -> dict[tuple, Any]:
    """The recovery prompts of every recovered configuration in ``points``, once per :func:`recovery_data_key`
    (rank 0 draws, every rank gets them): a bad ``calib_task`` is one line before the weights load."""
    from lmms_topo_plugin.api import draw_recovery_data

    sets: dict[tuple, Any] = {}
    for point in points:
        key = recovery_data_key(point.config)
        if point.config.recovery.enabled and key not in sets:
            sets[key] = compute_on_rank0(lambda: draw_recovery_data(point.config))
    return sets


def teacher_for(point: Configuration, loaded: LoadedModel, cache: DiskCache, recovering: Recovering):
    """The teacher of a recovered configuration, from the dense ``loaded`` (call it before the plan is applied):
    computed (or read from the cache) once per prompts and teacher settings; None without recovery."""
    from lmms_topo_plugin.recovery.run import teach

    config = point.config
    if not config.recovery.enabled:
        return None
    key = (recovery_data_key(config), tuple(sorted(config.recovery.data_fingerprint().items())),
           config.recovery.recover_batch_size)
    if key not in recovering.teachers:
        data = recovering.data[recovery_data_key(config)]
        recovering.teachers[key] = teach(config, data, loaded, recovering.model_id, cache)
    return recovering.teachers[key]


@contextmanager
def recovered(teacher: Any, loaded: LoadedModel, config: PruneConfig, point: Configuration, plan: dict,
              cache: DiskCache, model_id: str) -> Iterator[dict | None]:
    """Inside :func:`plan_applied`: the pruned model recovered (trained, or its weights read from the cache) for the
    body of the ``with`` block, the weights recovery changed put back after it; yields the recovery record (None,
    and nothing done, without ``teacher``). Every rank calls it: recovery is data-parallel."""
    if teacher is None:
        yield None
        return
    from lmms_topo_plugin.recovery.run import pruned_identity, recover
    from lmms_topo_plugin.recovery.train import changed_parameters, weights_restored

    rebuilt = rebuilt_plan(point, plan, config)
    pruned_id = pruned_identity(model_id, [action.as_dict() for action in rebuilt.actions], rebuilt.token_pruning)
    with weights_restored(loaded, changed_parameters(loaded, config.recovery)):
        record = recover(teacher, loaded, config, pruned_id, cache, token_pruner(config.token_pruning),
                         kept_layers=rebuilt.kept_layers)
        yield record.as_dict()


def rebuilt_plan(point: Configuration, plan: dict, config: PruneConfig):
    """The configuration's plan as ``export --winner`` rebuilds it from the row
    (:func:`~lmms_topo_plugin.plan.plan_from_record`), so both name the same pruned model in cache keys."""
    return plan_from_record(point.method, plan["num_layers"], plan["removed_layers"], config, plan.get("widths"),
                            plan.get("token_pruning"), plan.get("search"))


def recovery_summary(record: dict | None) -> dict | None:
    """A row's ``recovery``: the recovery record without its loss curve (steps, parameters, data, the held-out KL
    before and after, the training time, this run's time and whether the weights came from the cache)."""
    if record is None:
        return None
    return {key: value for key, value in record.items() if key != "loss_curve"}


def evaluate_missing(spec: SweepSpec, points: list[Configuration], done: dict, groups: dict[tuple, Prepared],
                     loaded: LoadedModel, manager, recovering: Recovering | None = None) -> dict[str, dict]:
    """Evaluate and measure every configuration without a result, method by method (one scoring each); a
    recovered one (``recover=kd``) is recovered after its plan is applied, then evaluated and measured, and its
    weights restored after."""
    from lmms_topo_plugin.integrations.lmms_eval.model import TopoPrunedChat

    todo = [point for point in points if point.key not in done]
    prompt = default_cost_prompt()
    run = points[0].config.run
    cache = DiskCache(run.cache_dir, enabled=not run.recompute)
    recovering = recovering or Recovering()
    results: dict[str, dict] = {}
    scored: dict[tuple, Any] = {}
    with tqdm(total=len(todo), desc="topo-prune sweep", unit="config") as bar:
        for point in todo:
            bar.set_postfix_str(point.label)
            start = time.perf_counter()
            plan = plan_for(point, groups, loaded, cache, scored, spec.out / "scores")
            config = evaluated_config(point.config, plan)
            teacher = teacher_for(point, loaded, cache, recovering)  # the dense model, before the plan
            with plan_applied(loaded, plan), recovered(teacher, loaded, config, point, plan, cache,
                                                       recovering.model_id) as recovery:
                lm = TopoPrunedChat.around(loaded, config, show_progress=False)
                raw = evaluate(lm, spec.tasks, manager, spec.limit)
                cost = measure_cost(loaded, prompt, repeats=spec.cost_repeats,
                                    token_pruner=token_pruner(config.token_pruning)) if rank() == 0 else None
            row = {"key": point.key, "method": point.method, "variant": point.variant, "budget": point.budget,
                   "calib_limit": point.calib_limit, **plan, "token_pruning": config.token_pruning,
                   "cost": cost, "eval_s": time.perf_counter() - start}
            if recovery is not None:
                row |= {"recovery": recovery_summary(recovery), "recovery_args": recovery_args(point.config)}
            if rank() == 0:
                row["metrics"], row["stderr"] = flatten_results(raw)
                atomic_write_json(spec.out / "configs" / f"{point.path_stem}.json", row)
            results[point.key] = row
            bar.update(1)
    return results


def evaluated_config(config: PruneConfig, plan: dict) -> PruneConfig:
    """The configuration as it is evaluated: a width method's own visual-token pruning (in its plan) added."""
    if plan.get("token_pruning") is None:
        return config
    return dataclasses.replace(config, tokens=from_record(plan["token_pruning"]))


def plan_applied(loaded: LoadedModel, plan: dict):
    """The plan's surgery on the one loaded model for the body of a ``with`` block, undone after it."""
    if plan.get("widths") is not None:
        return widths_sliced(loaded.adapter, plan["widths"]["kept"], plan["widths"]["layout"])
    return layers_removed(loaded.adapter, plan["removed_layers"])


def plan_for(point: Configuration, groups: dict[tuple, Prepared], loaded: LoadedModel, cache: DiskCache,
             scored: dict, scores_dir: Path) -> dict:
    """The configuration's plan; its method is scored on the dense model the first time it is needed (rank 0),
    and the scores are saved in ``scores_dir`` (:func:`scores_path`) for the reports of an export."""
    num_layers = loaded.adapter.num_layers
    if point.method == DENSE_METHOD:
        return {"n_remove": 0, "num_layers": num_layers, "removed_layers": [], "calibration": None,
                "method_params": {}, "score_s": 0.0}
    prepared = groups[(point.variant, point.calib_limit)]
    if prepared.scorer.unit == "widths":
        return width_plan(point, prepared, loaded, cache)
    score_s = 0.0
    if id(prepared) not in scored:
        start = time.perf_counter()
        scored[id(prepared)] = compute_on_rank0(lambda: compute_scores(prepared, loaded, cache, {})[0])
        score_s = time.perf_counter() - start
    plan = plan_layers(point.config, prepared.scorer, scored[id(prepared)], num_layers)
    calibration = None
    if prepared.calibration_prompts:
        calibration = {"source": point.config.calibration.source,
                       "samples": len(prepared.calibration_prompts),
                       "fingerprint": prompts_fingerprint(prepared.calibration_prompts)}
    if score_s and rank() == 0:
        atomic_write_json(scores_path(scores_dir, point.variant, point.calib_limit), {
            "method": point.method, "variant": point.variant, "calib_limit": point.calib_limit, "calibration": calibration,
            "method_params": point.config.method_params, "scores": scored[id(prepared)].to_json()})
    return {"n_remove": plan.n_remove, "num_layers": num_layers, "removed_layers": plan.removed_layers,
            "calibration": calibration, "method_params": point.config.method_params, "score_s": score_s}


def width_plan(point: Configuration, prepared: Prepared, loaded: LoadedModel, cache: DiskCache) -> dict:
    """A width method's plan for this budget: its search (rank 0, cached like a single run's) on the dense model."""
    num_layers = loaded.adapter.num_layers
    start = time.perf_counter()
    here = dataclasses.replace(prepared, config=point.config)
    result = compute_on_rank0(lambda: compute_widths(here, loaded, cache, {})[0])
    plan = plan_widths(point.config, result, num_layers)
    calibration = {"source": point.config.calibration.source, "samples": len(prepared.calibration_prompts),
                   "fingerprint": prompts_fingerprint(prepared.calibration_prompts)}
    return {"n_remove": 0, "num_layers": num_layers, "removed_layers": [], "calibration": calibration,
            "method_params": point.config.method_params, "score_s": time.perf_counter() - start,
            "widths": plan.widths.as_dict(), "search": plan.scores, "token_pruning": plan.token_pruning}


def scores_path(scores_dir: Path, variant: str, calib_limit: int | None) -> Path:
    """``<out>/scores/<variant>-<calibration size or default>.json``: one method's per-layer scores in a sweep."""
    return Path(scores_dir) / f"{file_stem(variant)}-{calib_limit or 'default'}.json"


def write_outputs(spec: SweepSpec, rows: list[dict], skipped: list[dict], rule: Rule, objective: str, metric: str,
                  winner: dict | None, identity: dict) -> None:
    """results.csv, results.md, pareto.png, pareto.json and winner.json in ``spec.out``; unchanged files are not
    rewritten. ``pareto.json`` holds one winner-style record per pruned configuration on the front of ``metric``
    against the removed fraction, for ``topo-prune export --pareto``."""
    table = results_table(rows, metric, rule)
    out = spec.out
    write_csv(table, out / "results.csv")
    write_markdown(render_markdown(table, metric, rule, objective, winner) + render_skipped(skipped), out / "results.md")
    write_if_changed(out / "pareto.png", pareto_png(rows, metric, winner))
    if winner is not None:
        write_winner(winner_record(winner, rows, rule, objective, metric, identity), out / "winner.json")
    front = [row for row in pareto_front(rows, metric, x="removed") if not is_dense(row)]
    write_winner(PARETO.stamp({"axis": "removed", "metric": metric, "records": [
        winner_record(row, rows, rule, objective, metric, identity) for row in front]}), out / "pareto.json")


def say(message: str) -> None:
    """One line on stderr that the harness's logging configuration cannot hide (rank 0 only)."""
    if rank() == 0:
        tqdm.write(f"topo-prune sweep: {message}", file=sys.stderr)


