"""`python -m lmms_topo_plugin.tools.training.card DIR --test-json FILE`: write DIR/README.md from the model-card
template, the directory's `training_log.json` and a measured test table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmms_topo_plugin.tools.training.evaluate import format_table

TEMPLATE = Path(__file__).resolve().parents[3] / "model_cards" / "default_model.md"


def _template() -> str:
    try:
        from importlib.resources import files

        return files("lmms_topo_plugin.model_cards").joinpath("default_model.md").read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        return TEMPLATE.read_text()


def render_card(model_dir: str | Path, test_table: dict, command: str) -> str:
    model_dir = Path(model_dir)
    log = json.loads((model_dir / "training_log.json").read_text())
    cfg = log["config"]
    monitor = {k: v for k, v in (log["final_monitor"] or {}).items()
               if k not in ("step", "minutes", "loss", "caption_tokens")}
    vocab = json.loads((model_dir / "config.json").read_text())["text_config"]["vocab_size"]
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 1e6
    scale = cfg["vision_lr_scale"]
    return _template().format(
        **cfg["spec"], vocab_size=vocab, parameters_m=log["parameters"] / 1e6, weights_mb=weights,
        seed=cfg["seed"], command=command, vision_steps=cfg["vision_steps"], steps_done=log["stage2"]["steps_done"],
        batch=cfg["batch"], lr=cfg["lr"], kind_weights=cfg["kind_weights"], minutes=log["minutes"],
        caption_steps=cfg["caption_steps"], caption_every=cfg["caption_every"], summary_layer=cfg["summary_layer"],
        caption_tokens=(log["final_monitor"] or {}).get("caption_tokens", float("nan")),
        vision_stage2="frozen" if scale == 0 else f"at {scale}x the learning rate",
        test_table=format_table(test_table, "test"), calib_table=format_table(monitor, "calib"),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmms_topo_plugin.tools.training.card")
    parser.add_argument("model_dir")
    parser.add_argument("--test-json", required=True)
    parser.add_argument("--command", required=True, help="the recipe command line to print in the card")
    args = parser.parse_args(argv)
    card = render_card(args.model_dir, json.loads(Path(args.test_json).read_text()), args.command)
    (Path(args.model_dir) / "README.md").write_text(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
