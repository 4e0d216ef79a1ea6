"""How sectrain reports what went wrong: the error a user can fix by changing the
configuration, and the exit status of a run that stopped early."""

import difflib

# Exit status of a run that stopped before its last step, by the status its summary.json
# records; a sweep whose jobs stopped so exits with that of the first. An interrupted
# run exits with 128 + the signal's number, as shells expect.
EXIT_STATUS = {"diverged": 3, "out_of_memory": 4}


class ConfigError(ValueError):
    """A configuration mistake; the CLI prints its message and exits with status 2."""


def unknown_choice(key, value, choices, what="value"):
    """Returns a ConfigError naming the key, the value (or sub-key: `what="key"`) received
    and what is allowed."""
    choices = sorted(str(c) for c in choices)
    message = f"{key}: unknown {what} {value!r}. Allowed: {', '.join(choices)}."
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    if close:
        message += f" Did you mean {close[0]!r}?"
    return ConfigError(message)
