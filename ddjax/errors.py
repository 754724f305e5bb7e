"""User-facing errors.

Every error a user can cause (bad config, missing data, unreadable checkpoint, diverged loss) is raised as a
subclass of :class:`DDJaxError` whose message is ONE line saying what is wrong and how to fix it (valid choices
listed). The launcher prints ``error: <message>`` and exits with status 2; library users catch the class.
"""


class DDJaxError(Exception):
    """Base class: a one-line, user-actionable problem."""


class ConfigError(DDJaxError, ValueError):
    """An invalid name or value in a config or function argument."""


class DataNotFoundError(DDJaxError, FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


class CheckpointError(DDJaxError):
    """A workdir or checkpoint that cannot be used (corrupt, or made by a different config)."""


class DivergenceError(DDJaxError, FloatingPointError):
    """A loss became NaN or infinite."""


def check_choice(what: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value
