"""Write a pruned model's card (``README.md`` of its Hub repository) from the files of its build.

Metadata through huggingface_hub's ``ModelCardData`` (``model-index`` from the sweep's lmms-eval results), the
body from the ``pruned_model.md`` template. Every number on the card is read from a file of the build
(:mod:`.build_files`), and each section names its file; a build without an evaluation says so instead of
showing one. The card names no path of the publisher's machine: a local base model by its directory's name (the
bundled default model in words), its fingerprint by the hash.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path
from typing import Any

from lmms_topo_plugin.tokens.configs import HalfVConfig
from lmms_topo_plugin.model_cards.build_files import EVIDENCE_DIR, SWEEP_RECORD, BuildFiles
from lmms_topo_plugin.model_cards.local_paths import (
    BUNDLED_MODEL_NAME, fingerprint_hash, is_absolute_path, is_bundled_model, is_local_base, portable,
)

LMMS_EVAL_URL = "https://github.com/EvolvingLMMs-Lab/lmms-eval"
TEMPLATE = "pruned_model.md"
MB = 1e6


@dataclass
class CardInputs:
    """What the card needs besides the build: where it goes and the facts only the user or the base card know."""

    repo_id: str
    license: str | None = None
    license_source: str | None = None  # e.g. "the base model's card"; None when given on the command line
    base_model_id: str | None = None  # a Hub id, for the ``base_model`` metadata


def bundled_task_names() -> set[str]:
    from lmms_topo_plugin.integrations.lmms_eval.tasks import bundled_tasks_dir

    return {path.stem for path in Path(bundled_tasks_dir()).rglob("*.yaml") if not path.stem.startswith("_")}


def lmms_eval_command(model_args: dict[str, Any], tasks: list[str], limit: int | float | None) -> str:
    """The ``lmms-eval`` command line that evaluates ``model_args`` on ``tasks`` as the sweep did."""
    args = ",".join(f"{key}={value}" for key, value in model_args.items())
    parts = ["lmms-eval", "--model", "topo_pruned", "--model_args", shlex.quote(args), "--tasks", ",".join(tasks)]
    if set(tasks) <= bundled_task_names():
        parts += ["--include_path", '"$(topo-prune tasks-dir)"']
    if limit is not None:
        parts += ["--limit", f"{limit:g}"]
    return " ".join(parts)


def split_metric(name: str) -> tuple[str, str]:
    task, metric = name.split("/", 1)
    return task, metric


def evaluation_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task metric of the sweep record: this model, the dense base, their ratio, stderrs."""
    winner, dense = record["winner"], record["dense"]
    rows = []
    for name, value in winner["metrics"].items():
        task, metric = split_metric(name)
        base = dense["metrics"].get(name)
        rows.append({"task": task, "metric": metric, "value": value, "stderr": winner["stderr"].get(name),
                     "dense": base, "dense_stderr": dense["stderr"].get(name),
                     "retained": value / base if base else None, "headline": name == record["metric"]})
    return rows


def eval_results(record: dict[str, Any]) -> list[Any]:
    """``model-index`` entries: each lmms-eval metric of this model, the dense value in its name."""
    from huggingface_hub import EvalResult

    source = f"lmms-eval {record['lmms_eval']} (lmms-topo-plugin {record['lmms_topo_plugin']})"
    limit = {"limit": record["limit"]} if record.get("limit") is not None else None
    return [EvalResult(task_type="image-text-to-text", dataset_type=row["task"], dataset_name=row["task"],
                       metric_type=row["metric"], metric_value=row["value"], dataset_args=limit,
                       metric_name=f"{row['metric']} (dense base: {row['dense']:.4g})" if row["dense"] is not None
                       else row["metric"], source_name=source, source_url=LMMS_EVAL_URL)
            for row in evaluation_rows(record)]


def cost_rows(record: dict[str, Any]) -> list[list[str]]:
    """Dense against this model: layers, parameters, prefill, decode and peak memory, and this model ÷ dense."""
    pruned, dense = record["winner"]["cost"], record["dense"]["cost"]

    def row(label, key, scale, digits):
        ours, base = pruned[key] * scale, dense[key] * scale
        return [label, f"{base:.{digits}f}", f"{ours:.{digits}f}", f"{ours / base:.2f}"]

    return [row("decoder layers", "num_layers", 1, 0), row("parameters (M)", "parameters", 1 / MB, 2),
            row("prefill latency (ms)", "prefill_s", 1e3, 2), row("decode latency (ms/token)", "decode_s_per_token", 1e3, 2),
            row(f"peak memory (MB, {pruned['memory_kind']})", "peak_memory_bytes", 1 / MB, 1)]


def speedups(record: dict[str, Any]) -> dict[str, float]:
    """Measured prefill and decode speedups (dense time ÷ this model's), the ideal ``L/L'`` and, where the sweep
    counted them, the prefill FLOPs ratio (dense ÷ this model's)."""
    pruned, dense = record["winner"]["cost"], record["dense"]["cost"]
    flops = {"flops": dense["prefill_flops"] / pruned["prefill_flops"]} if pruned.get("prefill_flops") else {}
    return {"prefill": dense["prefill_s"] / pruned["prefill_s"],
            "decode": dense["decode_s_per_token"] / pruned["decode_s_per_token"],
            "ideal": dense["num_layers"] / pruned["num_layers"], **flops}


def onnx_rows(build: BuildFiles) -> list[list[str]]:
    """Per exported precision: its files' size, and its agreement with PyTorch (fp32) or with fp32."""
    manifest, validation = build.onnx_manifest, build.onnx_validation
    rows = []
    for precision in manifest["precisions"]:
        names = [graph["variants"][precision] for graph in manifest["graphs"].values()]
        size = sum((build.root / "onnx" / name).stat().st_size for name in names) / MB
        if precision == "fp32":
            check = (f"max abs logit difference to PyTorch {validation['max_abs_logit_difference']:.2g}, "
                     f"greedy tokens identical: {'yes' if validation['greedy_tokens_identical'] else 'no'}")
        else:
            variant = validation["variants"][precision]
            check = (f"max abs logit difference to fp32 {variant['max_abs_logit_difference_vs_fp32']:.2g}, "
                     f"greedy tokens agreeing with fp32 {variant['greedy_token_agreement_vs_fp32']:.0%}")
        rows.append([precision, ", ".join(f"`onnx/{name}`" for name in names), f"{size:.1f}", check])
    return rows


def calibration_of(build: BuildFiles) -> dict[str, Any] | None:
    """The calibration the removed layers were chosen on (source, samples, fingerprint), if the build states it."""
    pruning = build.pruning or {}
    calibration = pruning.get("calibration")
    if calibration is None and build.run_report:
        calibration = build.run_report.get("calibration") or None
    return calibration


def tags_of(build: BuildFiles) -> list[str]:
    pruning = build.pruning or {}
    kind = "width-pruning" if pruning.get("widths") else "layer-pruning"
    tags = ["pruned", kind, "lmms-eval", "lmms-topo-plugin", build.config.get("model_type", "")]
    if pruning.get("method"):
        tags.insert(2, pruning["method"].replace("_", "-"))
    if pruning.get("recovery"):
        tags.append("knowledge-distillation")
    if build.onnx_manifest:
        tags.append("onnx")
    return [tag for tag in dict.fromkeys(tags) if tag]


def card_data(build: BuildFiles, inputs: CardInputs):
    """The card's YAML metadata."""
    from huggingface_hub import ModelCardData

    record = build.sweep_record
    return ModelCardData(
        base_model=inputs.base_model_id, library_name="transformers", pipeline_tag="image-text-to-text",
        license=inputs.license, tags=tags_of(build), model_name=inputs.repo_id.split("/")[-1],
        eval_results=eval_results(record) if record else None,
    )


def token_pruning_text(record: dict[str, Any] | None) -> str | None:
    """The checkpoint's visual-token pruning in words (None without it)."""
    from lmms_topo_plugin.tokens import from_record  # the pruners load torch: only a card that has one needs them

    config = from_record(record)
    if config is None:
        return None
    text = (f"`{config.token_method}` keeps {config.token_keep:g} of the visual tokens from decoder layer "
            f"{config.token_layer}")
    if isinstance(config, HalfVConfig):
        text += f" (anchor ratio {config.token_anchor:g})"
        if config.token_ssr_mode == "freeze":
            text += f"; from layer {config.token_ssr_layer} on they are frozen (`freeze`: keys and values only)"
        elif config.token_ssr_mode == "top5":
            text += f"; at layer {config.token_ssr_layer} the top 5% by attention stay (`top5`)"
    if record.get("detected"):
        text += f" (stages detected on {record['detected']['samples']} calibration prompts)"
    return text


LAYOUT_TEXT = {
    "per_layer": "each layer keeps its own widths (the paper's global ranking); lmms-topo-plugin rebuilds them "
                 "from `config.json` before loading",
    "uniform": "every layer keeps the same widths, stated in `config.json`, so plain `from_pretrained` loads it",
}


def widths_of(pruning: dict[str, Any]) -> dict[str, Any] | None:
    """A width-pruned checkpoint's layout and FLOPs, as its pruning record states them (None otherwise)."""
    widths = pruning.get("widths")
    if not widths:
        return None
    return {"layout": widths["layout"], "layout_text": LAYOUT_TEXT[widths["layout"]], **widths["search"]}


RECOVERY_KEYS = (("recover_samples", lambda r: r["data"]["samples"]), ("recover_steps", lambda r: r["steps"]),
                 ("recover_lr", lambda r: f"{r['lr']:g}"), ("recover_params", lambda r: r["params"]),
                 ("recover_batch_size", lambda r: r["batch_size"]),
                 ("recover_max_new_tokens", lambda r: r["teacher"]["max_new_tokens"]),
                 ("recover_topk", lambda r: r["teacher"]["topk"]))


def recovery_of(pruning: dict[str, Any]) -> dict[str, Any] | None:
    """What recovery (``recover=kd``) did to the weights after pruning, as the pruning record states it, and the
    ``model_args`` that repeat it; None when the weights are pruning's own."""
    recovery = pruning.get("recovery")
    if not recovery:
        return None
    model_args = {"recover": recovery["method"], **{key: value(recovery) for key, value in RECOVERY_KEYS}}
    if recovery["params"] == "lora":
        model_args["recover_lora_rank"] = recovery["lora_rank"]
    if recovery.get("hidden_weight"):  # absent: records made before hidden-state matching
        model_args["recover_hidden"] = f"{recovery['hidden_weight']:g}"
    trained = (f"LoRA adapters of rank {recovery['lora_rank']} on the decoder's linear layers, merged into the "
               "weights" if recovery["params"] == "lora" else "every decoder weight")
    return {**recovery, "model_args": model_args, "trained": trained}


def base_title(base: str | None, inputs: CardInputs) -> str:
    """The base model at the start of the card's first sentence."""
    if inputs.base_model_id:
        return f"`{inputs.base_model_id}`"
    if is_bundled_model(base):
        return f"The bundled default model of lmms-topo-plugin (`{BUNDLED_MODEL_NAME}`)"
    return f"`{portable(base)}`" if base else "The base model"


def public_model_args(model_args: dict[str, Any], inputs: CardInputs) -> dict[str, Any]:
    """A sweep's ``model_args`` as the card shows them: ``pretrained`` as the base's Hub id (``--base-model``),
    left out for the bundled default model (the plugin's default), else the local directory's name; any other
    local path by its name."""
    args = dict(model_args)
    pretrained = args.pop("pretrained", None)
    if pretrained is not None and (not is_local_base(pretrained) or inputs.base_model_id):
        args = {"pretrained": inputs.base_model_id or pretrained, **args}
    elif pretrained is not None and not is_bundled_model(pretrained):
        args = {"pretrained": portable(pretrained), **args}
    return {key: portable(value) if isinstance(value, str) and is_absolute_path(value) else value
            for key, value in args.items()}


def template_context(build: BuildFiles, inputs: CardInputs) -> dict[str, Any]:
    """Everything the template shows, already formatted, with the file each part comes from."""
    from lmms_topo_plugin.scorers.registry import get_method

    pruning = build.pruning or {}
    method = pruning.get("method")
    record = build.sweep_record
    removed = pruning.get("removed_layers", [])
    context = {
        "repo_id": inputs.repo_id, "plugin_version": version("lmms-topo-plugin"),
        "base_model": inputs.base_model_id or portable(pruning.get("base_model") or "unknown"),
        "base_title": base_title(pruning.get("base_model"), inputs),
        "base_is_hub_id": inputs.base_model_id is not None,
        "base_is_bundled": is_bundled_model(pruning.get("base_model")),
        "base_fingerprint": fingerprint_hash(pruning.get("base_model_fingerprint")), "method": method,
        "method_description": get_method(method).description if method else None,
        "method_params": pruning.get("method_params") or {}, "budget": pruning.get("budget"),
        "removed_layers": removed, "original_layers": pruning.get("original_num_hidden_layers"),
        "num_layers": build.export_report["num_layers"],
        "history": [{**earlier, "base_model": portable(earlier["base_model"]) if is_local_base(earlier["base_model"])
                     else earlier["base_model"]} for earlier in pruning.get("history", [])],
        "calibration": calibration_of(build), "model_type": build.config.get("model_type"),
        "dtype": build.export_report["dtype"], "reload_difference": build.export_report["max_abs_logit_difference"],
        "layer_counts": build.export_report["decoder_layer_counts"],
        "license": inputs.license, "license_source": inputs.license_source,
        "plots": build.plots, "evidence_dir": EVIDENCE_DIR, "sweep_record_file": f"{EVIDENCE_DIR}/{SWEEP_RECORD}",
        "run_report_file": build.run_report_name, "files": [str(path) for path in build.files()],
        "onnx": build.onnx_manifest is not None, "record": record,
        "token_pruning": token_pruning_text(pruning.get("token_pruning")),
        "widths": widths_of(pruning), "recovery": recovery_of(pruning),
    }
    if record:
        from lmms_topo_plugin.tokens import record_model_args

        own_tokens = {} if context["widths"] else record_model_args(record["winner"].get("token_pruning"))
        model_args = {**public_model_args(record["model_args"], inputs), "method": method,
                      "sparsity": f"{record['winner']['budget']:g}", **own_tokens,
                      **(context["recovery"]["model_args"] if context["recovery"] else {})}
        if record["winner"].get("calib_limit"):
            model_args["calib_limit"] = record["winner"]["calib_limit"]
        context.update({
            "evaluation": evaluation_rows(record), "tasks": record["tasks"], "limit": record.get("limit"),
            "reproduce_command": lmms_eval_command(model_args, record["tasks"], record.get("limit")),
            "checkpoint_command": lmms_eval_command({"pretrained": inputs.repo_id}, record["tasks"], record.get("limit")),
            "costs": cost_rows(record), "cost": record["winner"]["cost"], "speedup": speedups(record),
            "selected_as": record.get("selected_as", "winner"), "rule": record["rule"],
            "objective": record["objective"], "metric": record["metric"],
        })
    if build.onnx_manifest:
        context["onnx_rows"] = onnx_rows(build)
        context["onnx_provider"] = build.onnx_validation["provider"]
        context["onnx_prompts"] = build.onnx_validation["prompts"]
        context["download_dir"] = inputs.repo_id.split("/")[-1]
    return context


def render_card(build: BuildFiles, inputs: CardInputs):
    """The card as a huggingface_hub ``ModelCard`` (``str(card)`` is the README text)."""
    from huggingface_hub import ModelCard

    template = files("lmms_topo_plugin.model_cards").joinpath(TEMPLATE).read_text()
    return ModelCard.from_template(card_data(build, inputs), template_str=template, **template_context(build, inputs))
