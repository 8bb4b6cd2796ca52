"""sglang.srt.utils: dynamic_import (a custom weight loader by dotted path), is_cuda."""

import importlib

from vllm.platforms import current_platform


def dynamic_import(func_path):
    mod, _, name = func_path.rpartition(".")
    return getattr(importlib.import_module(mod), name)


def is_cuda():
    return current_platform.is_cuda()
