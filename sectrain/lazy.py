"""Deferred imports: TensorFlow takes seconds to load, and `sectrain --help` or a config
error must not wait for it."""

import importlib.util
import sys


def lazy_import(name):
    """Returns module `name`, executed only when one of its attributes is first used."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
