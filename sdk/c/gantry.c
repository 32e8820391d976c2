/*
 * gantry.c: the glue between a C policy (gantry.h) and the bindings `wit-bindgen c
 * --world WORLD` generates from Gantry's WIT (bindings/WORLD.h, bindings/WORLD.c),
 * for the world named by GANTRY_WORLD_PRIORITY, _FAIRSHARE, _PREEMPTION or _PLACEMENT
 * (policy.mk defines it from WORLD). What the canonical ABI hands over is the callee's
 * to free; what it returns is freed after the call (the generated post-return
 * functions), so answers are malloc'd.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

#if defined(GANTRY_WORLD_PRIORITY)
#include "priority.h"
#define W(name) priority_##name
#define EXPORT(name) exports_priority_##name
#elif defined(GANTRY_WORLD_FAIRSHARE)
#include "fairshare.h"
#define W(name) fairshare_##name
#define EXPORT(name) exports_fairshare_##name
#elif defined(GANTRY_WORLD_PREEMPTION)
#include "preemption.h"
#define W(name) preemption_##name
#define EXPORT(name) exports_preemption_##name
#elif defined(GANTRY_WORLD_PLACEMENT)
#include "placement.h"
#define W(name) placement_##name
#define EXPORT(name) exports_placement_##name
#else
#error "define GANTRY_WORLD_PRIORITY, _FAIRSHARE, _PREEMPTION or _PLACEMENT (policy.mk's WORLD)"
#endif

/* malloc that never returns NULL: running out is a trap the host reports. */
static void *allocate(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) abort();
    return p;
}

void gantry_log(gantry_level level, const char *format, ...) {
    char line[1025];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n < 0) return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    W(string_t) message = {(uint8_t *)line, len};
    gantry_policy_host_log((gantry_policy_host_level_t)level, &message);
}

const char *gantry_config_lines(const char *config,
                                const char *(*each)(int line_no, const char *text, void *ctx),
                                void *ctx) {
    int line_no = 0;
    for (const char *line = config; *line;) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        const char *next = eol ? eol + 1 : line + n;
        line_no++;
        const char *hash = memchr(line, '#', n);
        if (hash) n = (size_t)(hash - line);
        while (n > 0 && isspace((unsigned char)line[0])) line++, n--;
        while (n > 0 && isspace((unsigned char)line[n - 1])) n--;
        if (n > 0) {
            char text[256];
            if (n >= sizeof text) n = sizeof text - 1;
            memcpy(text, line, n);
            text[n] = 0;
            const char *refused = each(line_no, text, ctx);
            if (refused) return refused;
        }
        line = next;
    }
    return NULL;
}

/* A malloc'd copy of a string, for an answer the ABI frees. */
static W(string_t) owned(const char *s) {
    size_t len = strlen(s);
    W(string_t) out = {NULL, len};
    if (len > 0) {
        out.ptr = allocate(len);
        memcpy(out.ptr, s, len);
    }
    return out;
}

void EXPORT(info)(W(policy_info_t) * ret) {
    ret->name = owned(gantry_policy_name);
    ret->version = owned(gantry_policy_version);
}

bool EXPORT(init)(W(string_t) * config, W(string_t) * err) {
    /* NUL-terminated for the policy's convenience. */
    char *text = allocate(config->len + 1);
    if (config->len > 0) memcpy(text, config->ptr, config->len);
    text[config->len] = 0;
    const char *refused = gantry_init(text, config->len);
    free(text);
    W(string_free)(config);
    if (refused) {
        *err = owned(refused);
        return false;
    }
    return true;
}

#if defined(GANTRY_WORLD_PRIORITY)

priority_priority_fields_t exports_priority_fields(void) {
    return (priority_priority_fields_t)(gantry_priority_fields() & GANTRY_ALL_FIELDS);
}

#define COLUMN(c) (jobs->c.is_some ? jobs->c.val.ptr : NULL)

void exports_priority_prioritize(priority_time_t now, priority_priority_batch_t *jobs,
                                 priority_list_s64_t *ret) {
    gantry_jobs view = {
        .len = jobs->len,
        .job = COLUMN(job),
        .submit_time = COLUMN(submit_time),
        .age = COLUMN(age),
        .cores = COLUMN(cores),
        .nodes = COLUMN(nodes),
        .gpus = COLUMN(gpus),
        .time_limit = COLUMN(time_limit),
        .partition_tier = COLUMN(partition_tier),
        .qos = COLUMN(qos),
        .qos_priority = COLUMN(qos_priority),
        .fairshare = COLUMN(fairshare),
        .user = COLUMN(user),
        .account = COLUMN(account),
    };
    int64_t *out = allocate(jobs->len * sizeof(int64_t));
    gantry_prioritize(now, &view, out);
    ret->ptr = out;
    ret->len = jobs->len;
    gantry_policy_types_priority_batch_free(jobs);
}

#elif defined(GANTRY_WORLD_FAIRSHARE)

void exports_fairshare_factors(fairshare_time_t now, fairshare_share_tree_t *tree,
                               fairshare_list_f64_t *ret) {
    /* The four columns have one entry per node (the host's invariant). */
    gantry_share_tree view = {
        .len = (uint32_t)tree->id.len,
        .id = tree->id.ptr,
        .parent = tree->parent.ptr,
        .shares = tree->shares.ptr,
        .usage = tree->usage.ptr,
    };
    double *out = allocate(tree->id.len * sizeof(double));
    gantry_fairshare_factors(now, &view, out);
    ret->ptr = out;
    ret->len = tree->id.len;
    gantry_policy_types_share_tree_free(tree);
}

#elif defined(GANTRY_WORLD_PREEMPTION)

void exports_preemption_select(preemption_time_t now, preemption_list_preemption_query_t *batch,
                               preemption_list_list_victim_t *ret) {
    ret->len = batch->len;
    ret->ptr = allocate(batch->len * sizeof(preemption_list_victim_t));
    for (size_t q = 0; q < batch->len; q++) {
        const preemption_preemption_query_t *in = &batch->ptr[q];
        size_t n = in->candidates.len;
        gantry_candidate *candidates = allocate(n * sizeof(gantry_candidate));
        for (size_t i = 0; i < n; i++) {
            const gantry_policy_types_preemption_candidate_t *c = &in->candidates.ptr[i];
            candidates[i] = (gantry_candidate){c->job, c->qos_priority, c->partition_tier,
                                               c->start_time, c->cores, c->gpus,
                                               (gantry_preempt_mode)c->mode};
        }
        gantry_query query = {in->job, in->qos_priority, in->partition_tier, in->cores,
                              in->gpus, n, candidates};
        gantry_victim *chosen = allocate(n * sizeof(gantry_victim));
        size_t k = gantry_preemption_select(now, &query, chosen);
        if (k > n) k = n; /* never more than offered: the host checks the rest */
        preemption_victim_t *victims = allocate(k * sizeof(preemption_victim_t));
        for (size_t i = 0; i < k; i++) {
            victims[i] = (preemption_victim_t){chosen[i].job,
                                               (gantry_policy_types_preempt_mode_t)chosen[i].mode};
        }
        ret->ptr[q] = (preemption_list_victim_t){victims, k};
        free(chosen);
        free(candidates);
    }
    preemption_list_preemption_query_free(batch);
}

#elif defined(GANTRY_WORLD_PLACEMENT)

void exports_placement_rank(placement_placement_batch_t *batch,
                            placement_placement_ranking_t *ret) {
    uint32_t jobs = (uint32_t)batch->job.len;
    gantry_placement_batch view = {
        .jobs = jobs,
        .job = batch->job.ptr,
        .units_needed = batch->units_needed.ptr,
        .gpus_per_node = batch->gpus_per_node.ptr,
        .first_candidate = batch->first_candidate.ptr,
        .node = batch->node.ptr,
        .units = batch->units.ptr,
        .gpu_links = batch->gpu_links.ptr,
        .numa_domains = batch->numa_domains.ptr,
        .free_cores_after = batch->free_cores_after.ptr,
        .free_gpus_after = batch->free_gpus_after.ptr,
    };
    size_t candidates = batch->node.len;
    uint32_t *ranked = allocate(candidates * sizeof(uint32_t));
    uint32_t *first = allocate((jobs + 1) * sizeof(uint32_t));
    size_t at = 0;
    first[0] = 0;
    for (uint32_t q = 0; q < jobs; q++) {
        size_t own = batch->first_candidate.ptr[q + 1] - batch->first_candidate.ptr[q];
        size_t k = gantry_placement_rank(&view, q, ranked + at);
        at += k < own ? k : own;
        first[q + 1] = (uint32_t)at;
    }
    ret->ranked = (placement_list_u32_t){ranked, at};
    ret->first = (placement_list_u32_t){first, jobs + 1};
    gantry_policy_types_placement_batch_free(batch);
}

#endif
