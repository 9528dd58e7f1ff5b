"""`python -m lmms_topo_plugin.tools.training --out DIR [--seed 0] [--steps N] [--minutes M]`: train and save."""

from __future__ import annotations

import argparse
import json

from lmms_topo_plugin.tools.training.model import ModelSpec
from lmms_topo_plugin.tools.training.train import TrainConfig, train


def main(argv=None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m lmms_topo_plugin.tools.training", description=__doc__)
    parser.add_argument("--out", required=True, help="directory for model, processor and training_log.json")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="stage-2 steps (sets the LR schedule)")
    parser.add_argument("--vision-steps", type=int, default=defaults.vision_steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--caption-steps", type=int, default=defaults.caption_steps,
                        help="caption-only steps at the start of stage 2")
    parser.add_argument("--caption-every", type=int, default=defaults.caption_every,
                        help="then every n-th step is a caption batch (0: none)")
    parser.add_argument("--summary-layer", type=int, default=defaults.summary_layer,
                        help="decoder depth at which the last prompt token predicts the scene summary (0: off)")
    parser.add_argument("--vision-lr-scale", type=float, default=defaults.vision_lr_scale)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap on stage 2")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--spec", type=json.loads, default={}, help='ModelSpec overrides as JSON, e.g. {"text_width": 128}')
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32 (slower on CPU)")
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        seed=args.seed, spec=ModelSpec(**args.spec), steps=args.steps, vision_steps=args.vision_steps,
        batch=args.batch, lr=args.lr, caption_steps=args.caption_steps,
        caption_every=args.caption_every, summary_layer=args.summary_layer, vision_lr_scale=args.vision_lr_scale,
        minutes=args.minutes,
        eval_every=args.eval_every, bf16=not args.no_bf16,
    )
    train(cfg, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
