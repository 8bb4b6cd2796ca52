"""vllm/distributed/weight_transfer/factory.py: the engine registry, lazily
imported by module path (register_engine(name, module, class_name))."""

import importlib



class WeightTransferEngineFactory:
    _registry = {}

    @classmethod
    def register_engine(cls, name, module_path_or_cls, class_name=None):
        if name in cls._registry:
            raise ValueError("Weight transfer engine '%s' is already registered." % name)
        if isinstance(module_path_or_cls, str):
            cls._registry[name] = lambda: getattr(importlib.import_module(module_path_or_cls), class_name)
        else:
            cls._registry[name] = lambda: module_path_or_cls

    @classmethod
    def create_engine(cls, config, *args):
        if config.backend not in cls._registry:
            raise ValueError("Invalid weight transfer backend: %s. Available engines: %s"
                             % (config.backend, list(cls._registry)))
        return cls._registry[config.backend]()(config, *args)
