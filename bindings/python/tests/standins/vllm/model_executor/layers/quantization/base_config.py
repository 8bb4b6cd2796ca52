"""vllm/model_executor/layers/quantization/base_config.py: QuantizeMethodBase."""


class QuantizeMethodBase:
    def create_weights(self, layer, *args, **kwargs):
        raise NotImplementedError

    def process_weights_after_loading(self, layer):
        return


class QuantizationConfig:
    packed_modules_mapping = {}
