/* test_cli.c — smoke tests of the `refit` command: help, typos, plugins,
 * config check and its error messages, as a user meets them. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../check_run.h"

/* Run a shell command, capture stdout+stderr, return the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[4096];
    snprintf(full, sizeof(full), "cd '%s' && %s 2>&1", SOURCE_ROOT, cmd);
    FILE *p = popen(full, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out[1 << 16];

#define ck_has(want) ck_assert_msg(strstr(out, (want)) != NULL, "output lacks '%s':\n%s", (want), out)

/* A file of its own under $TMPDIR (a fresh directory per test, so runs side
 * by side, the sanitizer build's among them, never share one); path gets
 * <dir>/<name> and the file holds text.  tmp_done removes both. */
static void tmp_file(char *path, size_t cap, const char *name, const char *text)
{
    const char *t = getenv("TMPDIR");
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/refit-cli-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_lt(snprintf(path, cap, "%s/%s", dir, name), (int)cap);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static void tmp_done(char *path)
{
    remove(path);
    char *slash = strrchr(path, '/');
    *slash = 0;
    rmdir(path);
}

START_TEST(help_lists_commands)
{
    ck_assert_int_eq(run(REFIT_BIN " --help", out, sizeof(out)), 0);
    ck_has("usage: refit <command>");
    ck_has("plugins");
    ck_has("config");
    ck_assert_int_eq(run(REFIT_BIN, out, sizeof(out)), 2);
    ck_has("usage: refit");
    ck_assert_int_eq(run(REFIT_BIN " --version", out, sizeof(out)), 0);
    ck_has("refit 0.");
}
END_TEST

START_TEST(typo_suggests_command)
{
    ck_assert_int_eq(run(REFIT_BIN " plugns", out, sizeof(out)), 2);
    ck_has("unknown command 'plugns'");
    ck_has("did you mean 'plugins'?");
    /* Two letters swapped is one edit: the one command meant, and no list. */
    ck_assert_int_eq(run(REFIT_BIN " bnech", out, sizeof(out)), 2);
    ck_has("did you mean 'bench'?");
    ck_assert_msg(!strstr(out, "'demo'"), "a swap suggests unrelated commands:\n%s", out);
    ck_assert_int_eq(run(REFIT_BIN " xyz", out, sizeof(out)), 2);
    ck_assert_msg(!strstr(out, "did you mean"), "a word far from all commands gets a suggestion:\n%s", out);
}
END_TEST

START_TEST(swapped_letters_suggest_the_same_length_option)
{
    /* "--modle" is one swap from "--model" and one deletion from "--mode":
     * the swap, which keeps the length, is the likelier typo. */
    ck_assert_int_eq(run(REFIT_BIN " demo --modle x", out, sizeof(out)), 2);
    ck_has("did you mean '--model'?");
    ck_assert_int_eq(run(REFIT_BIN " demo --mdoe x", out, sizeof(out)), 2);
    ck_has("did you mean '--mode'?");
}
END_TEST

START_TEST(plugins_lists_and_rejects)
{
    ck_assert_int_eq(run("REFIT_NO_BUILD_TREE=1 REFIT_PLUGIN_PATH=" TEST_PLUGIN_DIR " " REFIT_BIN " plugins",
                         out, sizeof(out)),
                     0);
    ck_has("transport  good       1.2.3");
    ck_has("rejected   badabi");
    ck_has("why: built for plugin ABI 2.0");
    ck_has("1 plugin found, 5 rejected");
}
END_TEST

START_TEST(config_check_errors_name_the_place)
{
    char path[1200], cmd[2048], want[2048];
    tmp_file(path, sizeof(path), "bad.yaml", "store:\n  plugin: file\nrefit:\n  flush_evry: 3\n");
    snprintf(cmd, sizeof(cmd), REFIT_BIN " config check '%s'", path);
    ck_assert_int_eq(run(cmd, out, sizeof(out)), 1);
    snprintf(want, sizeof(want), "%s:4:3: key 'refit.flush_evry': unknown key; did you mean "
             "'refit.flush_every'?", path);
    ck_has(want);
    ck_assert_int_eq(run(REFIT_BIN " config check /nonexistent.yaml", out, sizeof(out)), 1);
    ck_has("/nonexistent.yaml: No such file or directory");
    ck_assert_int_eq(run(REFIT_BIN " config check", out, sizeof(out)), 2);
    ck_has("usage: refit config check FILE");
    ck_assert_int_eq(run(REFIT_BIN " config frobnicate", out, sizeof(out)), 2);
    ck_has("unknown subcommand 'frobnicate'");
    tmp_done(path);
}
END_TEST

START_TEST(config_check_overrides_and_origins)
{
    /* A config that names only the test plugin directory's good plugin. */
    char path[1200], cmd[2048], want[2048];
    tmp_file(path, sizeof(path), "good.yaml",
             "transport:\n  plugin: good\n  good:\n    depth: 5\nstore:\n  plugin: auto\n"
             "model:\n  plugin: auto\n");
    const char *env = "REFIT_NO_BUILD_TREE=1 REFIT_PLUGIN_PATH=" TEST_PLUGIN_DIR " REFIT_REFIT_FLUSH_EVERY=7 ";
    snprintf(cmd, sizeof(cmd), "%s%s config check '%s' --set refit.mode=push", env, REFIT_BIN, path);
    ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
    snprintf(want, sizeof(want), "# %s: valid", path);
    ck_has(want);
    snprintf(want, sizeof(want), "transport.good.depth: \"5\"  # %s:4:12", path);
    ck_has(want);
    ck_has("refit.flush_every: \"7\"  # env REFIT_REFIT_FLUSH_EVERY");
    ck_has("refit.mode: \"push\"  # --set");
    ck_has("refit.verify: \"full\"  # default");
    /* A bad value in the plugin's own section is caught with its place. */
    snprintf(cmd, sizeof(cmd), "%s%s config check '%s' --set transport.good.depth=99", env, REFIT_BIN, path);
    ck_assert_int_eq(run(cmd, out, sizeof(out)), 1);
    ck_has("--set: key 'transport.good.depth': 99 is outside [1, 10]");
    tmp_done(path);
}
END_TEST

/* Options come from one table per command (tools/refit/cli_opts.h): the
 * help lists each with its range, choices and default, and a value outside
 * them is refused naming the option before anything runs. */
START_TEST(option_tables_parse_check_and_help)
{
    ck_assert_int_eq(run(REFIT_BIN " pull --help", out, sizeof(out)), 0);
    ck_has("usage: refit pull [options]");
    ck_has("--tp N");
    ck_has("[1, 65536]");
    ck_has("--device WHERE");
    ck_has("(host|cuda); default host");
    ck_has("--config, -c FILE");
    ck_assert_int_eq(run(REFIT_BIN " pull --tp 0 --rank 0", out, sizeof(out)), 2);
    ck_has("--tp '0': expected an integer in [1, 65536]");
    ck_assert_int_eq(run(REFIT_BIN " pull --tp=2 --rank=2", out, sizeof(out)), 2);
    ck_has("--rank 2 is not below --tp 2");
    ck_assert_int_eq(run(REFIT_BIN " pull --tp 2 --rank 0 --device gpu", out, sizeof(out)), 2);
    ck_has("--device 'gpu': expected host|cuda");
    ck_assert_int_eq(run(REFIT_BIN " pull --tp", out, sizeof(out)), 2);
    ck_has("--tp needs a value");
    ck_assert_int_eq(run(REFIT_BIN " store show", out, sizeof(out)), 2);
    ck_has("usage: refit store show KEY");
    ck_has("needs KEY");
    ck_assert_int_eq(run(REFIT_BIN " store watch --count -3", out, sizeof(out)), 2);
    ck_has("--count '-3': expected an integer in [1, 2147483647]");
    ck_assert_int_eq(run(REFIT_BIN " doctor --sysfs", out, sizeof(out)), 2);
    ck_has("--sysfs needs a value");
    ck_assert_int_eq(run(REFIT_BIN " plugins extra", out, sizeof(out)), 2);
    ck_has("unexpected argument 'extra'");
}
END_TEST

/* Every command's --help lists its options (the names here are written
 * from the commands' documentation, not read from the tables), and a
 * mistyped option is refused before anything runs, naming it and, when one
 * is close, the option meant. */
static const struct {
    const char *cmd;
    const char *opts[8]; /* NULL-terminated */
    const char *typo, *meant; /* an option one edit away, and the one it suggests */
} commands[] = {
    {"pull", {"--tp", "--rank", "--ep", "--version", "--cycles", "--device", "--config", NULL}, "--rnak", "--rank"},
    {"publish", {"--hf", "--tp", "--rank", "--layout", "--shards", "--dp-rank", "--stats", NULL}, "--shard", "--shards"},
    {"shard", {"--hf", "--tp", "--ep", "--pp", "--vp", "--pp-layers", "--fsdp", NULL}, "--tpp", "--tp"},
    {"convert", {"--hf", "--shards", "--hf-config", "--target", "--fp8", "--fp8-floor", "--out", NULL}, "--tagret",
     "--target"},
    {"demo", {"--model", "--src-tp", "--dst-tp", "--engines", "--transport", "--make-checkpoint", "--device", NULL},
     "--engins", "--engines"},
    {"sim", {"--model", "--trainer", "--engine", "--nic-gbps", "--efficiency", "--schedule", "--jobs", NULL},
     "--enignes", "--engines"},
    {"doctor", {"--sysfs", NULL}, "--sysf", "--sysfs"},
    {"plugins", {"--config", NULL}, "--confg", "--config"},
    {"config check", {"--set", NULL}, "--sett", "--set"},
    {"store ls", {"--config", NULL}, "--confi", "--config"},
    {"store watch", {"--count", NULL}, "--cont", "--count"},
    {"bench cluster", {"--trainer", "--engine", "--nic-mbit", "--delay-us", "--fanout", "--efficiency", NULL},
     "--fanot", "--fanout"},
    {"bench cycle", {"--src", "--dst", "--fanout", "--mode", "--cycles", NULL}, "--mdoe", "--mode"},
    {"bench delta", {"--lr", "--steps", "--device", "--warmup", "--impl", "--group-mb", "--sweep", NULL}, "--stesp",
     "--steps"},
    {"bench fp8", {"--rows", "--cols", "--iters", "--device", NULL}, "--row", "--rows"},
    {"bench gpu", {"--colocated", "--check", "--src", "--nccl", "--python", "--dst-tp", NULL}, "--pyton", "--python"},
    {"bench layout", {"--hf-config", "--trainer-tp", "--trainer-ep", "--tp", "--ep", NULL}, "--trainer-pt",
     "--trainer-tp"},
    {"bench plan", {"--hf-config", "--model", "--src", "--dst", "--rank", "--iters", NULL}, "--itres", "--iters"},
    {"bench staged", {"--layers", "--vocab", "--cycles", "--fp8", "--keep", NULL}, "--vocb", "--vocab"},
    {"bench store", {"--tensors", "--iters", "--no-redis", "--keep", "--dir", NULL}, "--no-rediss", "--no-redis"},
    {"bench store-scale", {"--receivers", "--publishers", "--threads", "--model", "--trainer", "--reads", NULL},
     "--reciever", NULL},
    {"bench transport", {"--plugin", "--sizes", "--time", "--many", "--rounds", "--no-baseline", NULL}, "--plugn",
     "--plugin"},
};

START_TEST(every_command_helps_with_its_options)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        char cmd[256], want[128];
        snprintf(cmd, sizeof(cmd), "%s %s --help", REFIT_BIN, commands[i].cmd);
        ck_assert_msg(run(cmd, out, sizeof(out)) == 0, "%s: exit status", cmd);
        snprintf(want, sizeof(want), "usage: refit %s", commands[i].cmd);
        ck_has(want);
        ck_has("options:");
        for (const char *const *o = commands[i].opts; *o; o++) {
            snprintf(want, sizeof(want), "  %s", *o); /* at the start of its line */
            ck_has(want);
        }
    }
}
END_TEST

START_TEST(option_typos_name_the_option)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        char cmd[256], want[160];
        if (i % 8 == 0) { /* a few: a word far from every option gets no suggestion */
            snprintf(cmd, sizeof(cmd), "%s %s --no-such-option 1", REFIT_BIN, commands[i].cmd);
            ck_assert_msg(run(cmd, out, sizeof(out)) == 2, "%s: exit status\n%s", cmd, out);
            ck_has("unknown option '--no-such-option'");
            ck_assert_msg(!strstr(out, "did you mean"), "%s suggests an option for a word far from all:\n%s", cmd,
                          out);
        }
        snprintf(cmd, sizeof(cmd), "%s %s %s=1", REFIT_BIN, commands[i].cmd, commands[i].typo);
        ck_assert_msg(run(cmd, out, sizeof(out)) == 2, "%s: exit status\n%s", cmd, out);
        snprintf(want, sizeof(want), "unknown option '%s'", commands[i].typo);
        ck_has(want);
        snprintf(want, sizeof(want), "(see refit %s --help)", commands[i].cmd);
        ck_has(want);
        if (commands[i].meant) {
            snprintf(want, sizeof(want), "did you mean '%s'?", commands[i].meant);
            ck_has(want);
        }
    }
}
END_TEST

/* One source for each default: a default a page of docs/ states in a
 * table with "key" and "default" columns is the schema's, as `refit config
 * keys` prints it. */
struct doc_default {
    char key[96], def[64];
};

/* The KEY and DEFAULT columns of `refit config keys`. */
static size_t schema_defaults(struct doc_default *d, size_t cap)
{
    ck_assert_int_eq(run(REFIT_BIN " config keys", out, sizeof(out)), 0);
    size_t n = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l && n < cap; l = strtok_r(NULL, "\n", &save))
        if (sscanf(l, "%95s %*s %63s", d[n].key, d[n].def) == 2 && strcmp(d[n].key, "KEY"))
            n++;
    return n;
}

/* Cell i of a table row ("| a | b |"), trimmed and without backquotes. */
static int cell(const char *row, int i, char *buf, size_t cap)
{
    const char *p = row;
    for (int k = 0; k <= i; k++) {
        p = strchr(p, '|');
        if (!p)
            return 0;
        p++;
    }
    const char *e = strchr(p, '|');
    if (!e)
        return 0;
    while (p < e && (*p == ' ' || *p == '`'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '`'))
        e--;
    snprintf(buf, cap, "%.*s", (int)(e - p), p);
    return 1;
}

/* Checks the table rows of one page; returns how many it compared. */
static int check_page(const char *path, const struct doc_default *sd, size_t n_sd)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096], c0[128], c[128];
    int def_col = -1, compared = 0;
    while (fgets(line, sizeof(line), f)) {
        if (line[0] != '|') {
            def_col = -1; /* a table ends */
            continue;
        }
        if (cell(line, 0, c0, sizeof(c0)) && !strcmp(c0, "key")) {
            def_col = -1;
            for (int i = 1; cell(line, i, c, sizeof(c)); i++)
                if (!strcmp(c, "default"))
                    def_col = i;
            continue;
        }
        /* whole dotted keys only: a plugin's table gives keys relative to its section */
        if (def_col < 0 || !strchr(c0, '.') || strchr(c0, ' ') || !cell(line, def_col, c, sizeof(c)))
            continue;
        size_t i = 0;
        while (i < n_sd && strcmp(sd[i].key, c0))
            i++;
        ck_assert_msg(i < n_sd, "%s: key '%s' is not in the schema", path, c0);
        ck_assert_msg(!strcmp(sd[i].def, c), "%s: key '%s': the page says default '%s', the schema '%s'", path, c0,
                      c, sd[i].def);
        compared++;
    }
    fclose(f);
    return compared;
}

/* `refit doctor` on a host with a GPU says whether a CUDA MPS daemon runs
 * (its control socket in CUDA_MPS_PIPE_DIRECTORY): without one, colocated
 * processes time-slice the GPU.  The host is a sysfs tree of one NVIDIA
 * display controller; the daemon a socket bound where nvidia-cuda-mps-control
 * puts its own. */
START_TEST(doctor_says_whether_mps_runs)
{
    const char *t = getenv("TMPDIR");
    char root[1024], cmd[4096], sock[1200];
    snprintf(root, sizeof(root), "%s/refit-cli-mps-XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(root));
    const char *dev = "devices/pci0000:00/0000:00:01.0/0000:18:00.0";
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && mkdir -p %s devices/system/node/node0 bus/pci/devices mps && echo 0-3 > "
             "devices/system/node/node0/cpulist && echo 0 > %s/numa_node && echo 0x10de > %s/vendor && "
             "echo 0x030200 > %s/class && ln -s ../../../%s bus/pci/devices/0000:18:00.0",
             root, dev, dev, dev, dev, dev);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "CUDA_MPS_PIPE_DIRECTORY='%s/mps' " REFIT_BIN " doctor --sysfs '%s'", root, root);
    ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
    ck_has("gpu 0000:18:00.0");
    ck_has("cuda mps: no daemon at");
    ck_has("nvidia-cuda-mps-control -d");

    struct sockaddr_un a = {.sun_family = AF_UNIX};
    ck_assert_int_lt(snprintf(sock, sizeof(sock), "%s/mps/control", root), (int)sizeof(a.sun_path));
    strcpy(a.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(run(cmd, out, sizeof(out)), 0);
    ck_has("cuda mps: a daemon's control socket at");
    ck_has(sock);
    close(fd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(docs_defaults_are_the_schemas)
{
    static struct doc_default sd[1024];
    size_t n_sd = schema_defaults(sd, 1024);
    ck_assert_uint_gt(n_sd, 50);
    static const char *const pages[] = {"configuration.md", "fanout.md", "store.md", "delta.md", "modes.md",
                                        "transports.md", "scale.md", "cuda.md"};
    int compared = 0;
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/docs/%s", SOURCE_ROOT, pages[i]);
        if (access(path, R_OK) == 0)
            compared += check_page(path, sd, n_sd);
    }
    ck_assert_int_ge(compared, 10); /* the tables were found and read */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120); /* per test: the newest run refit 20-50 times */
    tcase_add_test(tc, help_lists_commands);
    tcase_add_test(tc, typo_suggests_command);
    tcase_add_test(tc, swapped_letters_suggest_the_same_length_option);
    tcase_add_test(tc, plugins_lists_and_rejects);
    tcase_add_test(tc, config_check_errors_name_the_place);
    tcase_add_test(tc, config_check_overrides_and_origins);
    tcase_add_test(tc, option_tables_parse_check_and_help);
    tcase_add_test(tc, every_command_helps_with_its_options);
    tcase_add_test(tc, option_typos_name_the_option);
    tcase_add_test(tc, docs_defaults_are_the_schemas);
    tcase_add_test(tc, doctor_says_whether_mps_runs);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
