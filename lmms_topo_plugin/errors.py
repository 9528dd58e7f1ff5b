"""The failures the plugin owns: each one carries a one-line message for the user and the exit code reporting it.

lmms-eval catches ``Exception`` and exits 0, so :func:`lmms_topo_plugin.failures.exit_on_failure` turns every
one of these (and out-of-memory, and any other exception inside the plugin) into ``SystemExit(exit_code)``.

=========  ==========================================================================
exit code  meaning
=========  ==========================================================================
1          an unexpected exception inside the plugin (named step, exception type)
2          bad ``model_args`` (including too few calibration samples) or command-line input: nothing loaded
3          a missing optional dependency (the message says how to install it)
4          the model or its processor failed to load
5          non-finite (NaN/inf) hidden states or scores, or scores that carry no information over the
           candidate layers (all equal, or undefined everywhere): the message names the layers
6          out of memory (the message names the step and what to lower)
7          ``topo-prune sweep``: no configuration passes the rule (the tables are written first)
8          ``topo-prune push``: no token, the token or repository refused, or a failed upload or commit
130        interrupted (Ctrl-C): one line says what re-running does (resume, or start over from the cache)
=========  ==========================================================================
"""


class PluginError(Exception):
    """A failure the plugin reports with one line (``str(error)``) and a non-zero ``exit_code``."""

    exit_code = 1


class ModelArgsError(PluginError, ValueError):
    """A ``model_args`` value (or a combination of them) is invalid.

    The message is one line that names the argument and the allowed values.
    """

    exit_code = 2


class UsageError(PluginError, ValueError):
    """A command-line argument names something unusable (a destination that holds other files, a directory that is
    not a build, a file that is not an image); the message says what is wrong and what to do instead."""

    exit_code = 2


class UnsupportedArchitectureError(ModelArgsError):
    """The checkpoint's architecture has no adapter."""


class MissingDependencyError(PluginError, ImportError):
    """An optional package a method needs is not installed; the message says how to install it."""

    exit_code = 3


class ModelLoadError(PluginError, OSError):
    """The weights or the processor of ``pretrained`` could not be loaded."""

    exit_code = 4


class NonFiniteError(PluginError, FloatingPointError):
    """NaN or inf in calibration states or layer scores; the message names the layer or depth."""

    exit_code = 5


class UninformativeScoresError(NonFiniteError):
    """A scoring method's importance is the same for every candidate layer (all equal, or undefined everywhere and
    so constant): any selection would be a tie broken by depth, so nothing is selected. Exit code 5, as for
    non-finite scores; the message names the layers and what to raise (``calib_limit``, a method parameter)."""


class OutOfMemory(PluginError, MemoryError):
    """A step ran out of (GPU or host) memory; the message names the step and what to lower."""

    exit_code = 6


class NoPassingConfiguration(PluginError):
    """A sweep finished but no configuration passes the user's rule."""

    exit_code = 7


class HubError(PluginError):
    """``topo-prune push`` could not publish: no token, a refused token or repository, a failed upload or
    commit (the message names the step; nothing partial is committed)."""

    exit_code = 8
