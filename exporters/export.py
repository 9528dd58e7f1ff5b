"""``topo-prune export``: rebuild one configuration and save it as a validated ``from_pretrained`` checkpoint.

The configuration comes from a sweep's ``winner.json`` (its exact removed layers are re-applied to the base
model, which must still have the fingerprint the sweep measured: nothing is re-scored) or from a
``model_args`` string (pruned as a single run would). The checkpoint is written to a temporary directory,
reloaded with transformers, compared with the pruned model in memory (logits on a fixed prompt with an image,
the layer count at every config level), and only then renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from lmms_topo_plugin.cache import DiskCache
from lmms_topo_plugin.config.params import params_of
from lmms_topo_plugin.config.prune import LoadConfig, PruneConfig
from lmms_topo_plugin.scorers.registry import get_method
from lmms_topo_plugin.errors import ModelArgsError, PluginError
from lmms_topo_plugin.models.loading import LoadedModel, load_config, load_model
from lmms_topo_plugin.pipeline import apply_plan, model_fingerprint, prepare
from lmms_topo_plugin.records import PARETO, WINNER
from lmms_topo_plugin.plan import plan_from_record
from lmms_topo_plugin.config.recovery import RecoveryConfig
from lmms_topo_plugin.tokens import record_model_args
from lmms_topo_plugin.exporters.checkpoint import is_checkpoint, save_checkpoint, save_dtype
from lmms_topo_plugin.exporters.onnx.builder_decoder import DEFAULT_DECODER
from lmms_topo_plugin.exporters.evidence import report_writer, sweep_evidence, writer
from lmms_topo_plugin.runtime.generation import prompt_logits

MAX_LOGIT_DIFFERENCE = 1e-5  # reloaded vs in-memory, same dtype and weights: equal up to kernel noise


class ExportValidationError(PluginError):
    """The saved checkpoint does not reload to the model that was saved."""


def read_winner(path: str | Path) -> dict[str, Any]:
    """A sweep's ``winner.json``, checked for its schema; a one-line error naming ``--winner`` otherwise."""
    return WINNER.read(path, "--winner")


def read_pareto(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The winner-style records of a sweep's ``pareto.json`` (one per pruned configuration on its front)."""
    path = Path(sweep_dir) / "pareto.json"
    front = PARETO.read(path, "--pareto")
    if not front.get("records"):
        raise ModelArgsError(f"--pareto: {path} holds no {PARETO.name} configurations")
    return front["records"]


def holds_pareto_export(out: Path) -> bool:
    """``out`` holds a ``--pareto`` export: its ``index.json``, or (an interrupted one) only checkpoint folders."""
    return (out / "index.json").is_file() or all(is_checkpoint(entry) for entry in out.iterdir()
                                                  if not entry.name.startswith("."))


def export_pareto(sweep_dir: str | Path, out: str | Path, dtype_choice: str = "base",
                  onnx_precisions: tuple[str, ...] = (), onnx_decoder: str = DEFAULT_DECODER) -> Path:
    """Export every configuration on the sweep's front into ``out/<method>-<budget>-<calibration>/``, and write
    ``out/index.json`` listing them; returns the index path."""
    from lmms_topo_plugin.cache import atomic_write_json

    out = Path(out)
    entries = []
    for record in read_pareto(sweep_dir):
        winner = record["winner"]
        name = f"{winner['method']}-{winner['budget']:g}-{winner['calib_limit'] or 'default'}"
        name += "-recovered" if winner.get("recovery_args") else ""
        evidence = writer(sweep_evidence(record, Path(sweep_dir), "pareto_front"))
        export_checkpoint(rebuild_winner(record, dtype_choice), out / name, onnx_precisions, evidence, onnx_decoder)
        entries.append({"dir": name, "method": winner["method"], "budget": winner["budget"],
                        "removed_layers": winner["removed_layers"], "metric": record["metric"],
                        "value": winner["metrics"][record["metric"]]})
    atomic_write_json(out / "index.json", {"sweep": str(Path(sweep_dir).resolve()), "configurations": entries})
    return out / "index.json"


def rebuild_winner(record: dict[str, Any], dtype_choice: str = "base") -> LoadedModel:
    """The base model, loaded in the dtype it will be saved in, with the winner's layers removed (and its
    visual-token pruning in the pruning record), after checking the base is the one the sweep measured; a winner
    the sweep recovered (``recovery_args``) is recovered again with the same parameters and prompts (the cache's
    weights when the sweep ran here), its pruning record carrying the recovery."""
    winner = record["winner"]
    widths = winner.get("widths")  # a width method prunes its own visual tokens: not a token_method= of the config
    if widths is None and get_method(winner["method"]).unit == "widths":
        raise ModelArgsError(f"--winner: {winner['method']} at {winner['budget']:g} was recorded without its widths "
                             "(a sweep before width plans were saved); re-run the sweep")
    model_args = {**without_recovery(record["model_args"]),
                  **({} if widths else record_model_args(winner.get("token_pruning")))}
    prepared = prepare(PruneConfig.from_model_args(model_args))
    config = PruneConfig.from_model_args({**model_args, "dtype": saveddtype_name(prepared, dtype_choice)})
    fingerprint = model_fingerprint(prepared.pretrained, prepared.hf_config, config.load.revision)
    if fingerprint != record["model"]:
        raise ModelArgsError(f"--winner: the base model changed since the sweep (it measured {record['model']}, "
                             f"now {fingerprint}); re-run the sweep")
    data = None
    if winner.get("recovery_args"):  # recovered in the sweep: the same recovery, on the same prompts
        config = config.with_values(**winner["recovery_args"])
        data = recovery_data_of(config, winner)
    loaded = load_model(config.load, prepared.pretrained, prepared.hf_config)
    num_layers = loaded.adapter.num_layers
    plan = plan_from_record(winner["method"], num_layers, winner["removed_layers"], config, widths,
                            winner.get("token_pruning"), winner.get("search"))
    details = {"method_params": winner.get("method_params") or {}, "calibration": winner.get("calibration"),
               "budget": winner["budget"], "selected_by": {key: record[key] for key in ("rule", "objective", "metric")}}
    teacher, cache = None, DiskCache(config.run.cache_dir, enabled=not config.run.recompute)
    if data is not None:  # the teacher is the dense model: before the plan changes it
        from lmms_topo_plugin.recovery.run import teach

        teacher = teach(config, data, loaded, fingerprint, cache)
    apply_plan(plan, prepared, loaded, details)
    if teacher is not None:  # the recovered weights the sweep evaluated (its cache entry, or trained again)
        from lmms_topo_plugin.api import recover_pruned

        recover_pruned(teacher, loaded, config, fingerprint, plan, cache)
    return loaded


def without_recovery(model_args: dict[str, str]) -> dict[str, str]:
    """A sweep's shared ``model_args`` less ``recover=``/``recover_*`` (a row carries its own: ``recovery_args``)."""
    return {key: value for key, value in model_args.items() if key not in params_of(RecoveryConfig)}


def recovery_data_of(config: PruneConfig, winner: dict[str, Any]):
    """The recovery prompts of a recovered winner, drawn again (before any weights load) and checked against the
    ones the sweep trained on: a one-line error when they differ."""
    from lmms_topo_plugin.api import draw_recovery_data

    data = draw_recovery_data(config)
    swept = ((winner.get("recovery") or {}).get("data") or {}).get("fingerprint")
    if swept is not None and data.fingerprint != swept:
        raise ModelArgsError(f"--winner: the recovery prompts changed since the sweep (it trained on {swept}, now "
                             f"{data.fingerprint}); re-run the sweep")
    return data


def export_winner(winner_path: str | Path, out: str | Path, dtype_choice: str = "base",
                  onnx_precisions: tuple[str, ...] = (), check: Callable[[LoadedModel], None] | None = None,
                  onnx_decoder: str = DEFAULT_DECODER) -> Path:
    """Export a sweep's ``winner.json`` to ``out`` with its evidence (:mod:`.evidence`); returns ``out``.
    ``check(loaded)`` runs on the rebuilt model before anything is written (e.g. that ONNX supports it)."""
    record = read_winner(winner_path)
    evidence = writer(sweep_evidence(record, Path(winner_path).parent, "winner"))
    loaded = rebuild_winner(record, dtype_choice)
    if check is not None:
        check(loaded)
    return export_checkpoint(loaded, out, onnx_precisions, evidence, onnx_decoder)


def export_model_args(model_args: dict[str, str], out: str | Path, dtype_choice: str = "base",
                      onnx_precisions: tuple[str, ...] = (), check: Callable[[LoadedModel], None] | None = None,
                      onnx_decoder: str = DEFAULT_DECODER) -> Path:
    """Prune as ``model_args`` describe (a single run: calibration and scores from the cache), in the dtype it
    will be saved in, and export it to ``out`` with the run's pruning report; returns ``out``."""
    from lmms_topo_plugin.api import load_pruned

    if "dtype" not in model_args or dtype_choice != "base":
        prepared = prepare(PruneConfig.from_model_args(model_args), load_calibration=False)
        model_args = {**model_args, "dtype": saveddtype_name(prepared, dtype_choice)}
    loaded, report = load_pruned(model_args)
    if check is not None:
        check(loaded)
    return export_checkpoint(loaded, out, onnx_precisions, report_writer(report), onnx_decoder)


def saveddtype_name(prepared, dtype_choice: str) -> str:
    """``float16``/``bfloat16``/``float32``: the base checkpoint's dtype for ``base`` (float32 when it states none)."""
    dtype = save_dtype(dtype_choice, getattr(prepared.hf_config, "dtype", None))
    return dtype_name(dtype) if dtype is not None else "float32"


def export_checkpoint(loaded: LoadedModel, out: str | Path, onnx_precisions: tuple[str, ...] = (),
                      evidence: Callable[[Path], Any] | None = None, onnx_decoder: str = DEFAULT_DECODER) -> Path:
    """Save ``loaded`` (in its own dtype) to ``out``, validated by reloading it in that dtype; with
    ``onnx_precisions`` (fp32 always first), also the ONNX build in ``out/onnx``, validated against PyTorch
    (:mod:`~lmms_topo_plugin.exporters.onnx.build`); ``evidence(build_dir)`` adds the configuration's reports
    (:mod:`.evidence`). ``onnx_decoder``: whose decoder graph the ONNX build gets (``auto``, ``torch``,
    ``builder``: :func:`~lmms_topo_plugin.exporters.onnx.build.build_onnx`). Nothing is renamed into place unless
    every validation passes."""
    from lmms_topo_plugin.search.measure import default_cost_prompt

    prompt = default_cost_prompt()
    expected = prompt_logits(loaded, [prompt])

    def validate(staging: Path) -> dict[str, Any]:
        reloaded = load_model(LoadConfig(device=str(loaded.model.device), dtype=dtype_name(loaded.model.dtype)),
                              str(staging), load_config(str(staging)))
        difference = (prompt_logits(reloaded, [prompt]) - expected).abs().max().item()
        counts = decoder_layer_counts(json.loads((staging / "config.json").read_text()))
        report = {"max_abs_logit_difference": difference, "decoder_layer_counts": counts,
                  "num_layers": loaded.adapter.num_layers, "dtype": dtype_name(loaded.model.dtype),
                  "pruning": getattr(loaded.model.config, "topo_pruning", None)}
        if difference > MAX_LOGIT_DIFFERENCE or set(counts.values()) != {loaded.adapter.num_layers}:
            raise ExportValidationError(f"the saved checkpoint does not reload to the pruned model "
                                        f"(max logit difference {difference:.3g}, layer counts {counts}); not saved")
        if onnx_precisions:
            from lmms_topo_plugin.exporters.onnx.build import build_onnx

            report["onnx"] = build_onnx(loaded, staging, onnx_precisions, onnx_decoder)
        if evidence is not None:
            evidence(staging)
        return report

    return save_checkpoint(loaded.model, loaded.processor, out, dtype=None, validate=validate)


def decoder_layer_counts(config: dict[str, Any]) -> dict[str, int]:
    """Every config level that states the decoder's layer count: the top level and the text config."""
    levels = {"config": config, "config.text_config": config.get("text_config") or {}}
    return {name: level["num_hidden_layers"] for name, level in levels.items() if "num_hidden_layers" in level}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
