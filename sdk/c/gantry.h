/*
 * gantry.h: Gantry's policy library for C.
 *
 * A policy in C implements gantry_init, its name and version, and its decision point's
 * functions below (priority, fairshare, preemption or placement: one per component),
 * and is built, with gantry.c and the bindings `wit-bindgen c` makes from Gantry's WIT,
 * into a WebAssembly component (`gantry policy new KIND --lang c DIR` writes a project
 * whose Makefile does it, with WORLD set to KIND). The library hides the generated
 * glue: inputs arrive as plain arrays, answers go into arrays the library owns.
 *
 * What a policy may use: C and the parts of wasi-libc that need no system interface
 * (memory, strings, formatting into buffers, math). Anything that reaches a file, the
 * clock, the environment or randomness would import WASI, which Gantry refuses at load:
 * a policy is a pure function of what it is given.
 */
#ifndef GANTRY_H
#define GANTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Columns of the priority batch, for gantry_priority_fields(). */
#define GANTRY_SUBMIT_TIME (1u << 0)
#define GANTRY_AGE (1u << 1)
#define GANTRY_CORES (1u << 2)
#define GANTRY_NODES (1u << 3)
#define GANTRY_GPUS (1u << 4)
#define GANTRY_TIME_LIMIT (1u << 5)
#define GANTRY_PARTITION_TIER (1u << 6)
#define GANTRY_QOS (1u << 7)
#define GANTRY_QOS_PRIORITY (1u << 8)
#define GANTRY_FAIRSHARE (1u << 9)
#define GANTRY_USER (1u << 10)
#define GANTRY_ACCOUNT (1u << 11)
#define GANTRY_JOB (1u << 12)
#define GANTRY_ALL_FIELDS ((1u << 13) - 1)

/*
 * The waiting jobs of one cycle, column by column: entry i of every array is job i.
 * A column is NULL unless gantry_priority_fields() names it. Times are seconds.
 */
typedef struct {
    uint32_t len;
    const uint64_t *job;
    const int64_t *submit_time;
    const int64_t *age;            /* seconds since submission */
    const uint64_t *cores;         /* tasks x cpus per task */
    const uint32_t *nodes;         /* 1 when the job lets the kernel choose */
    const uint64_t *gpus;
    const int64_t *time_limit;     /* 0 when unlimited */
    const uint32_t *partition_tier;
    const uint32_t *qos;           /* interned QOS id */
    const uint32_t *qos_priority;  /* that QOS's configured priority */
    const double *fairshare;       /* in [0, 1]: 1 under-served, 0 over-served */
    const uint32_t *user;          /* interned ids */
    const uint32_t *account;
} gantry_jobs;

typedef enum { GANTRY_DEBUG, GANTRY_INFO, GANTRY_WARN, GANTRY_ERROR } gantry_level;

/* A line in gantryd's log (or gantry sim's), printf-style; cut to 1,024 bytes. */
void gantry_log(gantry_level level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Configuration text as `key = value` lines: calls each(line_no, text, ctx) for every
 * line that is not blank once its comment (`#` on) is cut, with `text` trimmed and
 * NUL-terminated (lines are cut to 255 bytes). Stops at the first non-NULL message
 * `each` returns and returns it; NULL when every line was taken.
 */
const char *gantry_config_lines(const char *config,
                                const char *(*each)(int line_no, const char *text, void *ctx),
                                void *ctx);

/* ---- What every policy implements ---- */

/* Its name and version, as `gantry policy list` shows them. */
extern const char gantry_policy_name[];
extern const char gantry_policy_version[];

/*
 * Called once per load with the configuration text (`len` bytes, also NUL-terminated).
 * Returns NULL to accept it, or a message saying what is wrong (the library copies it;
 * the load fails with it). State kept in globals lives until the next load,
 * re-instantiation or restart, which start afresh.
 */
const char *gantry_init(const char *config, size_t len);

/* ---- Priority (WORLD = priority) ---- */

/* The columns gantry_prioritize reads (GANTRY_* bits): only those cross each cycle. */
uint32_t gantry_priority_fields(void);

/* One priority per job into priorities[0 .. jobs->len); the highest starts first. */
void gantry_prioritize(int64_t now, const gantry_jobs *jobs, int64_t *priorities);

/* ---- Fairshare (WORLD = fairshare) ---- */

/*
 * The share tree, column by column: entry i of every array is node i. Accounts come
 * first (node 0 is the root), then user associations; a child comes after its parent,
 * and a root is its own parent (parent[i] == i). Ids are stable across calls (accounts
 * from 0, user associations from 2^31); usage is undecayed core-seconds of the node and
 * everything below it.
 */
typedef struct {
    uint32_t len;
    const uint32_t *id;
    const uint32_t *parent;
    const uint32_t *shares;
    const double *usage;
} gantry_share_tree;

/* One factor in [0, 1] per node into factors[0 .. tree->len): 1 under-served. */
void gantry_fairshare_factors(int64_t now, const gantry_share_tree *tree, double *factors);

/* ---- Preemption (WORLD = preemption) ---- */

typedef enum { GANTRY_CANCEL, GANTRY_REQUEUE, GANTRY_SUSPEND } gantry_preempt_mode;

/* A running job the blocked one could displace, with its QOS's preempt mode. */
typedef struct {
    uint64_t job;
    uint32_t qos_priority;
    uint32_t partition_tier;
    int64_t start_time;
    uint64_t cores;
    uint64_t gpus;
    gantry_preempt_mode mode;
} gantry_candidate;

/* A job that cannot start, what it asks for, and what it could displace. */
typedef struct {
    uint64_t job;
    uint32_t qos_priority;
    uint32_t partition_tier;
    uint64_t cores;
    uint64_t gpus;
    size_t candidates_len;
    const gantry_candidate *candidates;
} gantry_query;

typedef struct {
    uint64_t job;
    gantry_preempt_mode mode;
} gantry_victim;

/*
 * Called once per blocked job of a cycle: its victims, chosen among its candidates,
 * into victims[0 .. query->candidates_len); returns how many (0: none).
 */
size_t gantry_preemption_select(int64_t now, const gantry_query *query, gantry_victim *victims);

/* ---- Placement (WORLD = placement) ---- */

/*
 * Jobs about to start and their candidate nodes, column by column. Job q is entry q of
 * job, units_needed and gpus_per_node; its candidates are entries first_candidate[q]
 * up to first_candidate[q + 1] of the candidate columns (node .. free_gpus_after).
 */
typedef struct {
    uint32_t jobs;
    const uint64_t *job;
    const uint32_t *units_needed;  /* units (see units) the job needs in all */
    const uint32_t *gpus_per_node;
    const uint32_t *first_candidate;  /* jobs + 1 entries, from 0 */
    const uint32_t *node;             /* interned node id */
    const uint32_t *units;            /* tasks the node can take (1 for a fixed node count) */
    const uint32_t *gpu_links;        /* NVLink links inside the GPU set it would give */
    const uint32_t *numa_domains;     /* NUMA domains the job would span there */
    const uint32_t *free_cores_after;
    const uint32_t *free_gpus_after;
} gantry_placement_batch;

/*
 * Called once per job of the batch: job q's ranking — indices into its own candidates
 * (0 is its first), best first — into ranking[0 .. its candidate count); returns its
 * length. A ranking may stop early: the candidates it leaves out follow in Gantry's
 * order, so 0 means "Gantry's order".
 */
size_t gantry_placement_rank(const gantry_placement_batch *batch, uint32_t q, uint32_t *ranking);

#endif
