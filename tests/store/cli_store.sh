#!/bin/sh
# `refit store` against a real catalog: the bench publishes a 500-tensor
# Qwen3-30B-A3B-shaped catalog and its source record into a file store,
# then ls, show (catalog and record), gc and watch must work on it.
set -eu
refit="$REFIT_BUILD_ROOT/tools/refit/refit"
dir=$(mktemp -d "${TMPDIR:-/tmp}/refit-cli-store-XXXXXX")
trap 'rm -rf "$dir"' EXIT
common="--set store.plugin=file --set store.file.path=$dir --namespace bench"

"$refit" bench store --tensors 500 --iters 1 --no-redis --keep --dir "$dir" > "$dir/bench.out"
grep -q "decode (validating" "$dir/bench.out"
key=$("$refit" store ls catalogs/ $common)
test -n "$key"
"$refit" store ls $common -l > "$dir/ls.out"
grep -q "^catalog .*$key" "$dir/ls.out"
grep -q "^record .*sources/bench-tp0" "$dir/ls.out"

"$refit" store show "$key" $common > "$dir/show.out"
grep -q "^tensors   500 " "$dir/show.out"
grep -q "model.layers.0.mlp.experts.3.down_proj.weight .*BF16 .*expert_row .*\[2048,768\]" "$dir/show.out"
grep -q "model.layers.0.self_attn.q_proj.weight .*column .*\[2048,2048\] .*\[4096,2048\]  *0 0..2048" "$dir/show.out"
"$refit" store show sources/bench-tp0 $common > "$dir/rec.out"
grep -q "^status     READY" "$dir/rec.out"
grep -q "^catalog    $key" "$dir/rec.out"

# A value that is not a record is an error naming the key, not a crash.
printf 'RFS1\0\0\0\0\0\0\0\0\0\0\0\0junk' > "$dir/refit/bench/sources/bad="
if "$refit" store show sources/bad $common 2> "$dir/err.out"; then exit 1; fi
grep -q "sources/bad" "$dir/err.out"

"$refit" store gc --dry-run $common | grep -q "unreferenced catalog"
"$refit" store watch versions/ --timeout 200 $common 2> /dev/null

# watch sees a key another process creates (here: a file written the way the
# file store writes it), then stops after one change.
"$refit" store watch sources/ --count 1 --timeout 60000 $common > "$dir/watch.out" 2> "$dir/watch.err" &
watcher=$!
# It says "watching" once its first snapshot is taken.
n=0
until grep -q watching "$dir/watch.err" 2> /dev/null; do
    n=$((n + 1)); test $n -lt 600 || exit 1; sleep 0.1
done
printf 'RFS1\0\0\0\0\0\0\0\0\0\0\0\0x' > "$dir/refit/bench/sources/.tmp-new"
mv "$dir/refit/bench/sources/.tmp-new" "$dir/refit/bench/sources/new="
wait $watcher
grep -q "+ sources/new" "$dir/watch.out"
echo ok
