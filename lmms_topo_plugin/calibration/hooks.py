"""One helper for temporary forward hooks: register them, run, and remove every one of them in ``finally``."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn


class HookSet:
    """``with HookSet() as hooks: hooks.before(module, fn); hooks.after(module, fn); ...`` — all removed on exit.

    ``before(module, fn)``: ``fn(module, args, kwargs)`` may return ``(args, kwargs)`` to replace the call's inputs.
    ``after(module, fn)``: ``fn(module, args, kwargs, output)`` may return a replacement output.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def before(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def after(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn, with_kwargs=True))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "HookSet":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
