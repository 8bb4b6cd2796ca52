/* config_schema.c — the core's configuration schema: every key of the
 * store, transport, topology, refit, model and plugins sections with its
 * type, default, range and meaning.  It is the one source of each default:
 * the engine reads values through refit_config_* (which fall back to these),
 * `refit config keys` prints them, and tests/cli checks that the defaults
 * docs/ states are these.  Plugin sections ("transport.tcp") are added by
 * the loader from each plugin's own table. */
#include "refit/config.h"
#include "config_int.h"


static const struct refit_cfg_field store_fields[] = {
    {"plugin", REFIT_CFG_STRING, "file", 0, -1, NULL, "store plugin: file (embedded) or redis"},
    {"namespace", REFIT_CFG_STRING, "default", 0, -1, NULL,
     "keys live under refit/<namespace>/ so jobs sharing a store never meet"},
    {"max_value", REFIT_CFG_SIZE, "256MiB", 1, 4294967296.0, NULL, "largest value a store accepts"},
    {"timeout", REFIT_CFG_DURATION, "10s", 1, 86400000, NULL, "timeout of one store operation"},
};

static const struct refit_cfg_field transport_fields[] = {
    {"plugin", REFIT_CFG_STRING, "tcp", 0, -1, NULL, "transport plugin: tcp, ucx, ofi, cuda_ipc"},
    {"timeout", REFIT_CFG_DURATION, "30s", 1, 86400000, NULL,
     "a transfer or connection that makes no progress for this long fails"},
};

static const struct refit_cfg_field topology_fields[] = {
    {"nic_pin", REFIT_CFG_ENUM, "off", 0, -1, "off|auto|stripe",
     "bind each rank to its NUMA-local NIC (auto) or spread it over several (stripe)"},
    {"devices", REFIT_CFG_LIST, NULL, 0, -1, NULL, "restrict NIC choice to these devices"},
    {"max_stripe", REFIT_CFG_INT, "4", 1, 64, NULL, "most local devices one rank stripes over"},
};

static const struct refit_cfg_field refit_fields[] = {
    {"mode", REFIT_CFG_ENUM, "pull", 0, -1, "pull|push", "who moves the bytes"},
    {"publish", REFIT_CFG_ENUM, "zero_copy", 0, -1, "zero_copy|copy",
     "zero_copy: receivers read the trainer's tensors; copy: staged, double-buffered"},
    {"timeout", REFIT_CFG_DURATION, "120s", 1, 86400000, NULL, "one refit cycle's limit"},
    {"release_timeout", REFIT_CFG_DURATION, "300s", 1, 86400000, NULL,
     "how long wait_released waits for acknowledgements"},
    {"flush_every", REFIT_CFG_INT, "100", 1, 1000000, NULL, "outstanding descriptors per peer"},
    {"gather_threshold", REFIT_CFG_SIZE, "2MiB", 0, 1099511627776.0, NULL,
     "tensors below this are packed into one region per rank"},
    {"scatter_threshold", REFIT_CFG_SIZE, "64KiB", 0, 1073741824.0, NULL,
     "runs below this are pulled whole into scratch and scattered locally"},
    {"replicas", REFIT_CFG_INT, "0", 0, 1000000, NULL,
     "engines of this layout pulling together: > 1 chooses sources layout-wide (docs/scale.md)"},
    {"replica_index", REFIT_CFG_INT, "-1", -1, 999999, NULL,
     "this engine's index among refit.replicas (-1: a hash of the receiver id)"},
    {"plan_dedupe", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "plan sources with equal catalogs and layouts as one (data-parallel copies); false: each on its own"},
    {"retain_versions", REFIT_CFG_INT, "2", 1, 1000, NULL, "versions kept in the store"},
    {"stale_after", REFIT_CFG_DURATION, "30s", 1, 86400000, NULL,
     "a source whose heartbeat is older is stale"},
    {"heartbeat", REFIT_CFG_DURATION, "2s", 1, 3600000, NULL, "heartbeat period of a source"},
    {"verify", REFIT_CFG_ENUM, "full", 0, -1, "off|full|sample", "checksum verification of pulled bytes"},
    {"sums", REFIT_CFG_ENUM, "store", 0, -1, "store|transport",
     "where a pull publisher puts its chunk checksums: store segments, or a table receivers READ with the data "
     "(docs/scale.md)"},
    {"verify_sample", REFIT_CFG_DOUBLE, "0.1", 0, 1, NULL, "fraction of tensors checked with verify: sample"},
    {"in_place", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "pull straight into destinations (no staging; destinations invalid on failure)"},
    {"ack_async", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "a receiver's acks written by a worker thread after the pull returns, off its critical path (docs/cuda.md)"},
    {"device_program", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "resident pulls from mapped peers (cuda_ipc) run as one kernel over a tile table (docs/cuda.md)"},
    {"receivers", REFIT_CFG_INT, "1", 0, 1000000, NULL, "receivers wait_released waits for"},
    {"push_streams", REFIT_CFG_INT, "8", 1, 1024, NULL,
     "push: receivers a publisher writes into at once (docs/scale.md; refit sim --push-streams)"},
    {"delta.enabled", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "publish each version's exact delta against the last; receivers holding that version apply it (docs/delta.md)"},
    {"delta.max_ratio", REFIT_CFG_DOUBLE, "0.25", 0, 1, NULL,
     "a version whose delta exceeds this fraction of the bytes is published without one"},
    {"fanout.republish", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "receivers re-publish what they committed as replicas (tree fan-out, docs/fanout.md)"},
    {"fanout.max_pullers_per_source", REFIT_CFG_INT, "0", 0, 1000000, NULL,
     "most receivers pulling from one source (the trainer, or a replica) at once; 0: unlimited"},
};

static const struct refit_cfg_field model_fields[] = {
    {"file", REFIT_CFG_STRING, NULL, 0, -1, NULL, "a model YAML whose model: section is merged under this one"},
    {"name", REFIT_CFG_STRING, NULL, 0, -1, NULL, "a label (Qwen3-0.6B)"},
    {"plugin", REFIT_CFG_STRING, "auto", 0, -1, NULL, "model plugin; auto: the one claiming hf.model_type"},
    {"hf_config", REFIT_CFG_STRING, NULL, 0, -1, NULL, "path of the HF config.json"},
    /* any target layout the model plugin offers (hf, transformers, vllm, sglang) */
    {"target", REFIT_CFG_STRING, "vllm", 0, -1, NULL, "destination layout and names (a target of the model plugin)"},
    {"skip", REFIT_CFG_LIST, NULL, 0, -1, NULL, "name patterns not transferred (MTP layers by default)"},
    {"include_mtp", REFIT_CFG_BOOL, "false", 0, -1, NULL,
     "also transfer the multi-token-prediction layers (engines that draft with them: vLLM's MTP speculative decoding)"},
    {"fp8.enabled", REFIT_CFG_BOOL, "false", 0, -1, NULL, "block-quantize linear weights to FP8"},
    {"fp8.rule", REFIT_CFG_ENUM, "trainer", 0, -1, "trainer|deepgemm", "scale rule"},
    {"fp8.floor", REFIT_CFG_DOUBLE, NULL, 0, 1, NULL, "scale floor; default the rule's own"},
    {"fp8.include", REFIT_CFG_LIST, NULL, 0, -1, NULL, "extra name patterns to quantize"},
    {"fp8.exclude", REFIT_CFG_LIST, NULL, 0, -1, NULL, "name patterns never quantized"},
    /* A target layout defined here (docs/models.md "Targets from YAML") */
    {"target_layout.name", REFIT_CFG_STRING, NULL, 0, -1, NULL, "name of a target layout defined here (model.target)"},
    {"target_layout.base", REFIT_CFG_STRING, NULL, 0, -1, NULL, "the plugin's target whose tensors it takes (vllm)"},
    {"target_layout.engine", REFIT_CFG_STRING, NULL, 0, -1, NULL, "the engine's name in messages"},
    {"target_layout.vocab_multiple", REFIT_CFG_INT, "0", 0, 1048576, NULL, "vocabulary rows padded to a multiple"},
    {"target_layout.fp8_block", REFIT_CFG_INT, "128", 1, 1048576, NULL, "block edge of its FP8 weights"},
    {"target_layout.fp8_grid", REFIT_CFG_LIST, NULL, 0, -1, NULL,
     "partitions its block-FP8 kernels need on the grid: split_parts, merged_parts, split_cols, stacks"},
    {"target_layout.rename", REFIT_CFG_LIST, NULL, 0, -1, NULL, "FROM=TO name prefix renames, the first match wins"},
    /* Shapes, for model files that stand for a HF config.json. */
    {"hf", REFIT_CFG_MAP, NULL, 0, -1, NULL, "HF config.json fields (model_type, hidden_size, ...)"},
};

static const struct refit_cfg_field plugins_fields[] = {
    {"path", REFIT_CFG_LIST, NULL, 0, -1, NULL, "directories searched for plugins"},
};

static const struct rf_cfg_schema_section core_schema[] = {
    {"store", store_fields, sizeof(store_fields) / sizeof(store_fields[0])},
    {"transport", transport_fields, sizeof(transport_fields) / sizeof(transport_fields[0])},
    {"topology", topology_fields, sizeof(topology_fields) / sizeof(topology_fields[0])},
    {"refit", refit_fields, sizeof(refit_fields) / sizeof(refit_fields[0])},
    {"model", model_fields, sizeof(model_fields) / sizeof(model_fields[0])},
    {"plugins", plugins_fields, sizeof(plugins_fields) / sizeof(plugins_fields[0])},
};

const struct rf_cfg_schema_section *rf_cfg_core_schema(size_t *n)
{
    *n = sizeof(core_schema) / sizeof(core_schema[0]);
    return core_schema;
}
