"""vllm.platforms.current_platform: which GPU the stand-in pretends to run on.

Set with ``configure(kind="cuda", capability=90)`` (tests); the queries are
vLLM's Platform methods (vllm/platforms/interface.py): is_cuda, is_rocm,
is_cpu, is_fp8_fnuz, has_device_capability (>=), is_device_capability
(==), is_device_capability_family (same major)."""


class _Platform:
    def __init__(self):
        self.kind, self.capability = "cuda", 90

    def is_cuda(self):
        return self.kind == "cuda"

    def is_rocm(self):
        return self.kind == "rocm"

    def is_cpu(self):
        return self.kind == "cpu"

    def is_xpu(self):
        return False

    def is_fp8_fnuz(self):
        return self.kind == "rocm"

    def has_device_capability(self, cap):
        return self.kind == "cuda" and self.capability >= cap

    def is_device_capability(self, cap):
        return self.kind == "cuda" and self.capability == cap

    def is_device_capability_family(self, cap):
        return self.kind == "cuda" and self.capability // 10 == cap // 10


current_platform = _Platform()


def configure(kind="cuda", capability=90):
    current_platform.kind, current_platform.capability = kind, capability
