/* cli_opts.h — a command's options as one table: each row says the
 * option's name, the type and range of its value, its default, where it
 * goes and one line of help.  The same table parses argv, checks values
 * (an error names the option and what it accepts) and prints --help, so
 * the help cannot drift from what the parser takes.
 *
 *   struct ls_opts { const char *config; struct cli_list set; int longfmt; };
 *   static const struct cli_opt ls_table[] = {
 *       CLI_COMMON(struct ls_opts, config, set),
 *       {"-l", "--long", CLI_FLAG, NULL, 0, 0, NULL, NULL, CLI_AT(struct ls_opts, longfmt),
 *        "value sizes and what each key is"},
 *   };
 *
 * Options take their value as the next argument or after '='
 * ("--tp 2", "--tp=2").  Arguments that are not options are positionals,
 * counted against the spec's bounds. */
#ifndef REFIT_CLI_OPTS_H
#define REFIT_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cli_opt_type {
    CLI_STR = 1, /* const char *: the argument itself */
    CLI_INT,     /* int in [lo, hi] */
    CLI_U64,     /* uint64_t in [lo, hi] (decimal) */
    CLI_FLAG,    /* int set to 1; takes no value */
    CLI_CHOICE,  /* const char *: one of choices ("host|cuda") */
    CLI_LIST,    /* repeatable: appended to a struct cli_list */
    CLI_LOG,     /* the log level, set as soon as it is parsed; nothing stored */
    CLI_DBL      /* double, any finite number: the command checks its range */
};

/* Values of a repeatable option; the caller points v at max slots. */
struct cli_list {
    const char **v;
    size_t n, max;
};

struct cli_opt {
    const char *name;  /* "--tp" */
    const char *alias; /* "-c", or NULL */
    enum cli_opt_type type;
    const char *meta;  /* the value's name in --help ("N", "FILE"); NULL for flags */
    int64_t lo, hi;    /* CLI_INT, CLI_U64 */
    const char *choices; /* CLI_CHOICE, CLI_LOG: "a|b|c" */
    const char *def;   /* parsed like a given value before argv; NULL: none */
    size_t off;        /* where the value goes in the options struct */
    const char *help;
};

#define CLI_AT(type, field) offsetof(type, field)

/* The options every command that reads a configuration takes. */
#define CLI_COMMON(type, config_field, set_field)                                                   \
    {"--config", "-c", CLI_STR, "FILE", 0, 0, NULL, NULL, CLI_AT(type, config_field),             \
     "the cluster file (configs/clusters/*.yaml)"},                                                \
    {"--set", NULL, CLI_LIST, "KEY=VALUE", 0, 0, NULL, NULL, CLI_AT(type, set_field),              \
     "override a configuration key (repeatable; after REFIT_<SECTION>_<KEY>)"},                    \
    {"--log", NULL, CLI_LOG, "LEVEL", 0, 0, "debug|info|warn|error", NULL, 0,                      \
     "log level (REFIT_LOG too)"}

/* One command (or subcommand): its table and what --help says. */
struct cli_spec {
    const char *cmd;      /* "pull", "store ls" */
    const char *args;     /* the positionals in the usage line ("FILE", "[PREFIX]"); NULL: none */
    int min_pos, max_pos; /* how many positionals */
    const char *about;    /* what the command does (a paragraph, lines ending in \n) */
    const struct cli_opt *opts;
    size_t n_opts;
};

#define CLI_N(table) (sizeof(table) / sizeof((table)[0]))

/* Parse argv[1..argc) into out (the struct the table's offsets point into)
 * after applying every default.  Positionals go to pos[0..*n_pos) (pos may
 * be NULL when max_pos is 0).  Returns 0, CLI_HELP when --help or -h was
 * given (the help is printed to stdout), or REFIT_EINVAL with a message
 * naming the option. */
#define CLI_HELP 1
int cli_opts_parse(const struct cli_spec *s, int argc, char **argv, void *out, const char **pos,
                   int *n_pos);

/* The usage line, the about text and one line per option (value, range
 * or choices, default). */
void cli_opts_help(const struct cli_spec *s, FILE *f);

/* The configuration a command's --config/--set name, opened in order:
 * the file, then the REFIT_* environment, then each --set in order. */
struct cli_common;
int cli_config_from(struct cli_common *c, const char *path, const struct cli_list *set);

#endif
