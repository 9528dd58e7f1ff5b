"""The two-stage recipe.

Stage 1 trains the CLIP vision tower alone with dense supervision: a temporary linear head on every patch feature
(the features the projector will see) predicts that grid cell's shape (or empty), colour, row and column.
Stage 2 trains projector + decoder (the tower frozen, or at a lower learning rate) in the plugin's chat format:
its first `caption_steps` steps on captions only (every grid cell named in order: dense supervision that teaches
the decoder to read the image tokens), then on question answering with the loss on the answer token and eos, every
`caption_every`-th step a caption batch again. On every question batch an auxiliary linear head (discarded after
training) reads the state of the position that predicts the answer after decoder layer `summary_layer` and predicts
the summary of scene and question (`data.summary_labels`): dense supervision that teaches that position to gather
the whole scene and the question's terms (attention starts out near uniform, so the gathering is learnt at once),
leaving the later layers to combine the two. Learning rate: linear warmup, flat, then a linear decay over the last
`decay_frac` of the steps. Everything is seeded; the held-out monitor is the calib split.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lmms_topo_plugin.families import get_adapter
from lmms_topo_plugin.synthbench import KINDS, load_split, normalize_answer

from lmms_topo_plugin.tools.training import data
from lmms_topo_plugin.tools.training.model import ModelSpec, build_model

DEFAULT_KIND_WEIGHTS = {"presence": 1.5, "attribute": 1.0, "count": 1.0, "spatial": 1.5, "math": 1.25}


@dataclass
class TrainConfig:
    seed: int = 0
    spec: ModelSpec = field(default_factory=ModelSpec)
    vision_steps: int = 400
    vision_lr: float = 3e-3
    vision_batch: int = 64
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    caption_steps: int = 200
    caption_every: int = 8  # after the caption-only phase, every n-th step is a caption batch (0: none)
    summary_layer: int = 6  # decoder depth at which the last prompt token predicts the summary (0: off)
    summary_weight: float = 1.0
    vision_lr_scale: float = 0.0  # stage-2 LR of the tower relative to `lr`; 0 freezes it
    warmup: int = 150
    decay_frac: float = 0.25
    weight_decay: float = 0.01
    clip: float = 1.0
    kind_weights: dict = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))
    eval_every: int = 250
    eval_split: str = "calib"
    minutes: float | None = None  # wall-clock cap on stage 2 (stops early: the schedule is step-based)
    bf16: bool = True
    threads: int = 2
    log_every: int = 25

    def to_dict(self) -> dict:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        return out


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def _log(message: str) -> None:
    print(message, flush=True)


# -- stage 1 ---------------------------------------------------------------------------------------


class PatchHead(torch.nn.Module):
    """Temporary per-patch classifier over the tower's selected features (discarded after stage 1)."""

    def __init__(self, width: int):
        super().__init__()
        self.shape = torch.nn.Linear(width, len(data.SHAPE_CLASSES))
        self.color = torch.nn.Linear(width, len(data.COLOR_CLASSES))
        self.row = torch.nn.Linear(width, 4)
        self.col = torch.nn.Linear(width, 4)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name)(features) for name in ("shape", "color", "row", "col")}


def patch_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The patch features the projector receives (`vision_feature_layer`, CLS dropped as "default" does)."""
    outputs = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return outputs.hidden_states[model.config.vision_feature_layer][:, 1:]


def train_vision(model, processor, cfg: TrainConfig) -> dict:
    stream = data.kind_mixture(f"{cfg.seed}/vision")
    head = PatchHead(model.config.vision_config.hidden_size)
    params = list(model.model.vision_tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=cfg.weight_decay)
    model.train()
    accuracy = {}
    for step in range(1, cfg.vision_steps + 1):
        batch = data.vision_batch(processor, data.take(stream, cfg.vision_batch))
        for group in optimizer.param_groups:
            group["lr"] = cfg.vision_lr * min(1.0, step / 50) * (1 - 0.9 * step / cfg.vision_steps)
        with _autocast(cfg.bf16):
            logits = head(patch_features(model, batch["pixel_values"]))
        losses = {k: F.cross_entropy(v.float().flatten(0, 1), batch[k].flatten(), ignore_index=data.IGNORE)
                  for k, v in logits.items()}
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        optimizer.step()
        if step % cfg.log_every == 0 or step == cfg.vision_steps:
            accuracy = {}
            for key, value in logits.items():
                target = batch[key].flatten()
                keep = target != data.IGNORE
                accuracy[key] = (value.argmax(-1).flatten()[keep] == target[keep]).float().mean().item()
            _log(f"[vision {step}/{cfg.vision_steps}] loss {loss.item():.4f} "
                 + " ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    return {"final_loss": loss.item(), "patch_accuracy": accuracy}


# -- stage 2 ---------------------------------------------------------------------------------------


class SummaryHead(torch.nn.Module):
    """Temporary linear head: a decoder state → logits of every scene-summary target (discarded after training)."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict(
            {name: torch.nn.Linear(width, n * classes) for name, (n, classes) in data.SUMMARY_CLASSES.items()})

    def forward(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(state).unflatten(-1, (data.SUMMARY_CLASSES[name][0], -1))
                for name, head in self.heads.items()}

    def loss(self, state: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(F.cross_entropy(logits.flatten(0, 1), labels[name].flatten(), ignore_index=data.IGNORE)
                   for name, logits in self(state).items())


def suffix_forward(model, batch: dict, n_targets: int, bf16: bool, summary_layer: int = 0):
    """(logits predicting the last `n_targets` tokens of every left-padded row, those tokens, and the state after
    decoder layer `summary_layer` of the last prompt token, the one predicting the first target; None when 0)."""
    with _autocast(bf16):
        out = model(**batch, use_cache=False, logits_to_keep=n_targets + 1, output_hidden_states=summary_layer > 0)
    summary = out.hidden_states[summary_layer][:, -n_targets - 1].float() if summary_layer else None
    return out.logits[:, :n_targets].float(), batch["input_ids"][:, -n_targets:], summary


@torch.no_grad()
def caption_accuracy(model, batch: dict, bf16: bool) -> float:
    """Teacher-forced token accuracy of the caption words (eos excluded)."""
    model.eval()
    logits, targets, _ = suffix_forward(model, batch, data.CAPTION_TARGETS, bf16)
    model.train()
    return (logits.argmax(-1) == targets)[:, :-1].float().mean().item()


@torch.no_grad()
def quick_eval(model, processor, adapter, docs: list[dict], bf16: bool = True, batch: int = 128) -> dict:
    """Per-kind exact match of the greedy first answer token (one forward per batch; the monitor only)."""
    model.eval()
    suppress = list(model.generation_config.suppress_tokens or [])
    hits: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for start in range(0, len(docs), batch):
        chunk = docs[start : start + batch]
        inputs = data.qa_batch(processor, adapter, chunk, with_answers=False)
        with _autocast(bf16):
            logits = model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        if suppress:
            logits[:, suppress] = -math.inf
        words = processor.tokenizer.convert_ids_to_tokens(logits.argmax(-1).tolist())
        for doc, word in zip(chunk, words):
            hits[doc["kind"]].append(float(normalize_answer(word) == normalize_answer(doc["answer"])))
    model.train()
    table = {kind: sum(v) / len(v) for kind, v in hits.items() if v}
    table["overall"] = sum(sum(v) for v in hits.values()) / sum(len(v) for v in hits.values())
    return table


def lr_at(step: int, cfg: TrainConfig) -> float:
    decay_start = cfg.steps * (1 - cfg.decay_frac)
    if step <= cfg.warmup:
        return cfg.lr * step / cfg.warmup
    if step <= decay_start:
        return cfg.lr
    return cfg.lr * max(0.02, (cfg.steps - step) / max(1.0, cfg.steps - decay_start))


def train_qa(model, processor, cfg: TrainConfig, history: list, start_time: float) -> dict:
    adapter = get_adapter(model)
    stream = data.kind_mixture(cfg.seed, cfg.kind_weights)
    monitor = load_split(cfg.eval_split)
    tower = list(model.model.vision_tower.parameters())
    tower_ids = {id(p) for p in tower}
    rest = [p for p in model.parameters() if id(p) not in tower_ids]
    summary_head = SummaryHead(model.config.text_config.hidden_size) if cfg.summary_layer else None
    if summary_head is not None:
        rest += list(summary_head.parameters())
    groups = [{"params": rest, "scale": 1.0}]
    if cfg.vision_lr_scale > 0:
        groups.append({"params": tower, "scale": cfg.vision_lr_scale})
    else:
        for p in tower:
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    caption_monitor = data.caption_batch(processor, adapter, monitor[:128])
    model.train()
    stage_start, running, done = time.time(), None, 0
    for step in range(1, cfg.steps + 1):
        captioning = step <= cfg.caption_steps or (cfg.caption_every > 0 and step % cfg.caption_every == 0)
        docs = data.take(stream, cfg.batch)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group["scale"]
        if captioning:
            batch, n_targets = data.caption_batch(processor, adapter, docs), data.CAPTION_TARGETS
        else:
            batch, n_targets = data.qa_batch(processor, adapter, docs), 2
        logits, targets, summary = suffix_forward(model, batch, n_targets, cfg.bf16, cfg.summary_layer)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        summary_loss = None  # question answering only: a caption prompt does not hold the question
        if summary_head is not None and not captioning:
            summary_loss = summary_head.loss(summary, data.summary_labels(docs))
        optimizer.zero_grad(set_to_none=True)
        (loss if summary_loss is None else loss + cfg.summary_weight * summary_loss).backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip)
        optimizer.step()
        done = step
        if not captioning:
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        elapsed = time.time() - stage_start
        if step % cfg.log_every == 0:
            rate = step * cfg.batch / elapsed
            task = f"caption loss {loss.item():.4f}" if captioning else f"qa loss {running:.4f}"
            if summary_loss is not None:
                task += f" summary loss {summary_loss.item():.4f}"
            _log(f"[stage 2 {step}/{cfg.steps}] {task} lr {lr_at(step, cfg):.2e} "
                 f"{rate:.0f} samples/s {elapsed / 60:.1f} min")
        out_of_time = cfg.minutes is not None and elapsed > cfg.minutes * 60
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            table = quick_eval(model, processor, adapter, monitor, cfg.bf16)
            table["caption_tokens"] = caption_accuracy(model, caption_monitor, cfg.bf16)
            history.append({"step": step, "minutes": (time.time() - start_time) / 60, "loss": running, **table})
            _log(f"[eval {cfg.eval_split} @ {step}] " + " ".join(f"{k} {v:.3f}" for k, v in table.items()))
        if out_of_time:
            _log(f"stopping stage 2 at step {step}: the {cfg.minutes} min cap was reached")
            break
    return {"steps_done": done, "final_loss": running, "minutes": (time.time() - stage_start) / 60}


# -- recipe ----------------------------------------------------------------------------------------


def save(model, processor, out: Path) -> None:
    """fp16 safetensors + processor, with `save_pretrained`."""
    out.mkdir(parents=True, exist_ok=True)
    half = model.to(torch.float16)
    for p in half.parameters():
        p.requires_grad_(True)
    half.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    model.to(torch.float32)


def train(cfg: TrainConfig, out: str | Path | None = None) -> dict:
    """Runs both stages, saves model + processor (fp16) and `training_log.json` into `out`; returns the log."""
    if not 0 <= cfg.summary_layer <= cfg.spec.text_layers:
        raise ValueError(f"summary_layer must be in [0, {cfg.spec.text_layers}], got {cfg.summary_layer}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.time()
    model, processor = build_model(cfg.spec, cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"model: {n_params / 1e6:.2f} M parameters; config {json.dumps(cfg.to_dict())}")
    vision = train_vision(model, processor, cfg)
    history: list = []
    qa = train_qa(model, processor, cfg, history, start)
    model.eval()
    log = {
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "parameters": n_params,
        "stage1": vision,
        "stage2": qa,
        "history": history,
        "final_monitor": history[-1] if history else None,
        "minutes": (time.time() - start) / 60,
    }
    if out is not None:
        out = Path(out)
        save(model, processor, out)
        (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
        _log(f"saved to {out}")
    log["model"] = model
    return log
