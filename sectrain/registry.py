"""Name -> builder registries with helpful errors for unknown names."""

import fnmatch
import warnings

from sectrain.errors import unknown_choice


class Registry:
    """Maps names to objects, registered with a decorator.

    Example:

    >>> MODELS = Registry("model.name")
    >>> @MODELS.register("tiny")
    ... def tiny(): ...
    >>> MODELS.names("t*")
    ['tiny']
    """

    def __init__(self, key):
        self.key = key  # the config key whose values this registry resolves
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                warnings.warn(f"{self.key} {name!r} registered twice; the last wins", stacklevel=2)
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name):
        if name not in self._entries:
            raise unknown_choice(self.key, name, self._entries)
        return self._entries[name]

    def names(self, pattern="*"):
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name):
        return name in self._entries
