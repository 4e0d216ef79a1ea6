"""Deferred imports: TensorFlow takes seconds to load, and `sectrain --help` or a config
error must not wait for it."""

import importlib
import sys
import types


class _Deferred(types.ModuleType):
    """Stands for a module until one of its attributes is used, then imports it.

    It stays out of `sys.modules` until then (unlike `importlib.util.LazyLoader`'s
    modules), so that code which looks through the loaded modules does not load it:
    `inspect.getmodule` reads each one's `__file__` (Hydra's error report calls it), and
    matplotlib tests for tensors once "tensorflow" is in `sys.modules`.
    """

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_import(name):
    """Module `name`, imported when one of its attributes is first used."""
    return sys.modules.get(name) or _Deferred(name)
