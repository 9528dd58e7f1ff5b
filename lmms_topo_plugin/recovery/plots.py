"""The figure of a recovery: its training loss per step, with the held-out KL before and after."""

from __future__ import annotations

from typing import Any


def loss_curve_png(record: dict[str, Any]) -> bytes:
    """PNG of a :class:`~lmms_topo_plugin.recovery.run.RecoveryRecord` (as a dict): the KL of each step's batch and
    its running mean (a tenth of the steps wide), and the held-out KL before and after as dashed lines."""
    from lmms_topo_plugin.plotting import figure_png, subplots

    losses = record["loss_curve"]
    steps = range(1, len(losses) + 1)
    width = max(1, len(losses) // 10)
    running = [sum(losses[max(0, i - width + 1):i + 1]) / (i + 1 - max(0, i - width + 1)) for i in range(len(losses))]
    figure, axes = subplots(figsize=(6, 3.4))
    axes.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="batch KL")
    axes.plot(steps, running, color="#1f77b4", linewidth=1.6, label=f"running mean ({width} steps)")
    axes.axhline(record["kl_before"], color="#d62728", linestyle="--", linewidth=1, label="held-out KL before")
    axes.axhline(record["kl_after"], color="#2ca02c", linestyle="--", linewidth=1, label="held-out KL after")
    axes.set_xlabel("step")
    axes.set_ylabel("KL(teacher ‖ student) per answer token")
    lora = f", rank {record['lora_rank']}" if record.get("lora_rank") else ""
    axes.set_title(f"recover=kd ({record['params']}{lora}): {record['steps']} steps, lr {record['lr']:g}, "
                   f"{record['data']['samples']} prompts", fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return figure_png(figure)
