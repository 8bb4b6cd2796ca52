"""vllm/model_executor/model_loader/reload/layerwise.py (commit 01424e4b):
reloading checkpoint-format weights into a model that was post-processed.

record_metadata_for_reloading: each layer's parameters as the checkpoint
loads them (class, shape, dtype, attributes), before processing.
initialize_layerwise_reload: per layer, keep the current (kernel) tensors,
put the checkpoint-format parameters back "on the meta device" and wrap
their weight loaders.  A wrapped loader materializes the layer, loads, and
counts the elements loaded; when the layer is complete it runs the quant
method's process_weights_after_loading and copies the processed values
into the kernel tensors' storage (which CUDA graphs captured), then puts
the kernel tensors back.  finalize_layerwise_reload: layers that loaded
nothing get their kernel tensors back ("Failed to load weights" when they
had loadable elements); partly loaded ones are processed now.

One simplification: vLLM buffers a layer's loads until the layer is
complete and replays them on the materialized layer; the stand-in
materializes at the first load and loads at once.  What can be observed
(which layers are processed, with which values, into which storage) is
the same."""

import weakref

from nn import Parameter, meta_tensor, empty

from ...layers.quantization.base_config import QuantizeMethodBase
from ...parameter import COPIED

LAYERWISE_INFO = weakref.WeakKeyDictionary()
WARNINGS = []


class _Info:
    def __init__(self):
        self.restore_metadata = {}
        self.reset()

    def reset(self):
        self.kernel_tensors = None
        self.load_numel = 0
        self.load_numel_total = 0
        self.materialized = False

    def can_load(self):
        return self.kernel_tensors is not None


def _info(layer):
    if layer not in LAYERWISE_INFO:
        LAYERWISE_INFO[layer] = _Info()
    return LAYERWISE_INFO[layer]


def _own_params(layer):
    return {k: v for k, v in layer._parameters.items() if v is not None}


def record_metadata_for_reloading(model):
    for layer in model.modules():
        _info(layer).restore_metadata = {
            name: (type(p), p.shape, p.dtype, {k: v for k, v in p.__dict__.items() if k not in ("is_meta",)})
            for name, p in _own_params(layer).items()}


def _restore(cls, shape, dtype, attrs, data):
    p = cls.__new__(cls)
    Parameter.__init__(p, data)
    p.__dict__.update(attrs)
    p.is_meta = getattr(data, "is_meta", False)
    return p


def _place_kernel_tensors(layer, info):
    for name in list(_own_params(layer)):
        delattr(layer, name)
    for name, p in info.kernel_tensors.items():
        layer.register_parameter(name, p)


def _materialize(layer, info):
    for name, (cls, shape, dtype, attrs) in info.restore_metadata.items():
        p = _restore(cls, shape, dtype, attrs, empty(shape, dtype))
        p.weight_loader = getattr(layer, name).weight_loader  # keep the wrapped loader
        setattr(layer, name, p)
    info.materialized = True


def _process(layer, info):
    qm = getattr(layer, "quant_method", None)
    if isinstance(qm, QuantizeMethodBase):
        qm.process_weights_after_loading(layer)
    for name, kp in info.kernel_tensors.items():
        new = getattr(layer, name)
        if not (new.storage is kp.storage and new.offset == kp.offset):
            kp.data.copy_(new)
    _place_kernel_tensors(layer, info)
    info.reset()


def _wrap(layer, name, original):
    info = _info(layer)

    def online_process_loader(param, *args, **kwargs):
        if not info.can_load():
            return None
        if not info.materialized:
            _materialize(layer, info)
        before = COPIED[0]
        ret = original(getattr(layer, name), *args, **kwargs)
        info.load_numel += COPIED[0] - before
        if info.load_numel >= info.load_numel_total:
            _process(layer, info)
        return ret
    online_process_loader.__wrapped__ = original
    return online_process_loader


def initialize_layerwise_reload(model):
    for layer in model.modules():
        info = _info(layer)
        if info.can_load() or not info.restore_metadata:
            continue
        info.kernel_tensors = _own_params(layer)
        for name in list(info.kernel_tensors):
            delattr(layer, name)
        total = 0
        for name, (cls, shape, dtype, attrs) in info.restore_metadata.items():
            p = _restore(cls, shape, dtype, attrs, meta_tensor(shape, dtype))
            original = attrs.get("weight_loader") or getattr(layer, "weight_loader", None)
            p.weight_loader = _wrap(layer, name, _default(original))
            layer.register_parameter(name, p)
            total += p.numel
        info.load_numel_total = total


def _default(loader):
    if loader is not None:
        return loader
    from ...layers.linear import default_weight_loader
    return default_weight_loader


def finalize_layerwise_reload(model, model_config=None):
    for layer in model.modules():
        info = _info(layer)
        if not info.can_load():
            continue
        if info.load_numel <= 0:
            if info.load_numel_total > 0:
                WARNINGS.append("%s: Failed to load weights" % type(layer).__name__)
            _place_kernel_tensors(layer, info)
            info.reset()
        else:
            _process(layer, info)


finalize_layerwise_processing = finalize_layerwise_reload
