"""Exceptions raised for bad user input, before any heavy work starts."""


class ModelArgsError(ValueError):
    """A ``model_args`` value (or a combination of them) is invalid.

    The message is one line that names the argument and the allowed values.
    """


class UnsupportedArchitectureError(ModelArgsError):
    """The checkpoint's architecture has no adapter."""
