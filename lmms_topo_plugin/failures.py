"""The one place where failures become exit codes: lmms-eval exits 0 on exceptions, the plugin must not.

``exit_on_failure(step)`` wraps every entry into the plugin (model construction, each request type, each
``topo-prune`` command): a :class:`~lmms_topo_plugin.errors.PluginError` prints its own line, out-of-memory
prints the step and what to lower, anything else prints the step and the exception; then ``SystemExit`` with
the code from :mod:`lmms_topo_plugin.errors`. The traceback goes to the debug log (``--verbosity DEBUG``).

Ctrl-C (``KeyboardInterrupt``, which is not an ``Exception``) prints one line saying what re-running does and
exits 130, without a traceback; inside ``topo-prune`` the command reports it instead
(:func:`interrupts_reported_by_caller`), since only the command knows whether re-running resumes.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from lmms_topo_plugin.errors import OutOfMemory, PluginError

MAX_MESSAGE = 400
INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
RESTARTS = "re-running starts over, reusing the calibration and layer scores already cached"
_caller_reports_interrupts = False
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory")


def first_line(error: BaseException) -> str:
    """The first non-empty line of the error's message (its type name when it has none), bounded in length."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def is_out_of_memory(error: BaseException) -> bool:
    """torch's CUDA/CPU allocator failures and Python's ``MemoryError``."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OOM_TEXT)


@contextmanager
def out_of_memory_as_failure(step: str, hint: str) -> Iterator[None]:
    """Re-raise an out-of-memory error inside ``step`` as :class:`OutOfMemory` naming the step and ``hint``."""
    try:
        yield
    except PluginError:
        raise
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        raise OutOfMemory(f"out of memory during {step} ({first_line(error)}); {hint}") from error


def describe(error: BaseException, step: str) -> tuple[int, str]:
    """``(exit code, one line)`` for an exception raised during ``step``."""
    if isinstance(error, PluginError):
        return error.exit_code, first_line(error)
    if is_out_of_memory(error):
        return OutOfMemory.exit_code, f"out of memory during {step} ({first_line(error)}); lower batch_size="
    return PluginError.exit_code, f"{step} failed: {type(error).__name__}: {first_line(error)}"


def report_failure(error: BaseException, step: str, prefix: str) -> int:
    """Print ``prefix: <one line>`` to stderr, log the traceback at debug level; return the exit code.

    A line that already begins with the prefix as a word (the step ``topo-prune export`` of ``topo-prune``) is
    printed as it is: ``topo-prune export failed: ...``, not ``topo-prune: topo-prune export failed: ...``.
    """
    from loguru import logger

    def prefixed(text: str) -> str:
        return text if text.startswith(f"{prefix} ") else f"{prefix}: {text}"

    code, line = describe(error, step)
    logger.opt(exception=error).debug(prefixed(f"{step} failed"))
    print(prefixed(line), file=sys.stderr, flush=True)
    return code


def report_interrupt(line: str) -> int:
    """Print the one line of a Ctrl-C (what re-running does) to stderr; return :data:`INTERRUPTED`."""
    print(line, file=sys.stderr, flush=True)
    return INTERRUPTED


@contextmanager
def interrupts_reported_by_caller() -> Iterator[None]:
    """Within the body, :func:`exit_on_failure` lets ``KeyboardInterrupt`` through to the caller (a
    ``topo-prune`` command, e.g. a sweep evaluating through the plugin, which says that re-running resumes)."""
    global _caller_reports_interrupts
    previous, _caller_reports_interrupts = _caller_reports_interrupts, True
    try:
        yield
    finally:
        _caller_reports_interrupts = previous


@contextmanager
def exit_on_failure(step: str, prefix: str = "topo_pruned") -> Iterator[None]:
    """Run the body; on any exception report it (:func:`report_failure`) and raise ``SystemExit`` with its code.

    On Ctrl-C: ``prefix: interrupted (step); re-running starts over, ...`` and ``SystemExit(130)`` (lmms-eval would
    print a traceback), unless the caller reports interrupts itself (:func:`interrupts_reported_by_caller`).
    """
    try:
        yield
    except KeyboardInterrupt:
        if _caller_reports_interrupts:
            raise
        raise SystemExit(report_interrupt(f"{prefix}: interrupted ({step}); {RESTARTS}")) from None
    except Exception as error:
        raise SystemExit(report_failure(error, step, prefix)) from None
