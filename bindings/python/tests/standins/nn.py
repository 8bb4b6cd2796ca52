"""The subset of torch.nn the stand-in engines use, on refit.host.HostTensor.

``Module`` registers parameters and submodules on attribute assignment and
lists them like torch.nn.Module (named_parameters with prefixes and without
duplicates, named_modules, register_parameter / register_buffer,
delattr); ``Parameter(t)`` shares t's bytes, as torch.nn.Parameter(t)
shares t's storage.  ``meta`` parameters (vLLM's reload puts layers on the
meta device) have a shape and no bytes.
"""

import math

from refit.host import HostTensor


class Parameter(HostTensor):
    def __init__(self, data, requires_grad=False):
        HostTensor.__init__(self, data.shape, data.dtype, data.storage, data.offset, data.strides)
        self.is_meta = getattr(data, "is_meta", False)

    @property
    def data(self):
        return self

    @data.setter
    def data(self, t):
        HostTensor.__init__(self, t.shape, t.dtype, t.storage, t.offset, t.strides)


def meta_tensor(shape, dtype):
    t = HostTensor((0,), dtype)
    t.shape = tuple(shape)
    t.strides = tuple(0 for _ in shape)
    t.is_meta = True
    return t


def empty(shape, dtype):
    return HostTensor(shape, dtype)


def full(shape, dtype, value):
    return HostTensor.from_list(shape, dtype, [value] * math.prod(shape))


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_non_persistent_buffers_set", set())

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError("cannot assign %s as parameter %r" % (type(value).__name__, name))
            params[name] = None
        elif self.__dict__.get("_buffers") is not None and name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules"):
            if k in d and name in d[k]:
                return d[k][name]
        raise AttributeError("%s has no attribute %r" % (type(self).__name__, name))

    def __delattr__(self, name):
        for k in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__[k]:
                del self.__dict__[k][name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name, module):
        self._modules[name] = module

    def named_modules(self, memo=None, prefix=""):
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield mp + ("." if mp else "") + name, p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix=""):
        for mp, m in self.named_modules(prefix=prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield mp + ("." if mp else "") + name, b


class ModuleList(Module):
    def __init__(self, mods):
        super().__init__()
        for i, m in enumerate(mods):
            self._modules[str(i)] = m

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        return self._modules[str(i)]

    def __len__(self):
        return len(self._modules)
