/*
 * A placement policy: pack jobs onto the nodes that will have the fewest cores left,
 * keeping whole nodes free for wide jobs. Gantry asks it once per cycle for the jobs
 * about to start, each with the nodes that could hold it; the answer ranks each job's
 * candidates, best first (a ranking may stop early: the rest follow in Gantry's order).
 *
 * Edit gantry_placement_rank, build with `make`, check with `gantry policy test`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

const char gantry_policy_name[] = "__NAME__";
const char gantry_policy_version[] = "0.1.0";

/* Prefer nodes whose GPUs are linked (NVLink) for jobs with several GPUs per node.
 * Globals start afresh (then gantry_init) on every load, re-instantiation and restart. */
static int prefer_gpu_links = 0;

static char message[128];

/* One line of the configuration: `prefer_gpu_links = true|false`. */
static const char *setting(int line_no, const char *text, void *ctx) {
    (void)ctx;
    char value[8];
    char rest;
    if (sscanf(text, "prefer_gpu_links = %7s %c", value, &rest) == 1 &&
        (!strcmp(value, "true") || !strcmp(value, "false"))) {
        prefer_gpu_links = !strcmp(value, "true");
        return NULL;
    }
    snprintf(message, sizeof message, "line %d: expected prefer_gpu_links = true or false",
             line_no);
    return message;
}

const char *gantry_init(const char *config, size_t len) {
    (void)len;
    prefer_gpu_links = 0;
    return gantry_config_lines(config, setting, NULL);
}

/* The batch being ranked, for the comparison (qsort passes no context). */
static const gantry_placement_batch *ranking_batch;
static uint32_t ranking_first;

/* Candidates x and y (indices into the job's own): negative when x is tried first. */
static int compare(const void *px, const void *py) {
    const gantry_placement_batch *b = ranking_batch;
    uint32_t x = ranking_first + *(const uint32_t *)px, y = ranking_first + *(const uint32_t *)py;
    if (prefer_gpu_links && b->gpu_links[x] != b->gpu_links[y])
        return b->gpu_links[x] > b->gpu_links[y] ? -1 : 1;
    if (b->free_cores_after[x] != b->free_cores_after[y])
        return b->free_cores_after[x] < b->free_cores_after[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

size_t gantry_placement_rank(const gantry_placement_batch *b, uint32_t q, uint32_t *ranking) {
    uint32_t first = b->first_candidate[q], count = b->first_candidate[q + 1] - first;
    for (uint32_t i = 0; i < count; i++) ranking[i] = i;
    ranking_batch = b;
    ranking_first = first;
    qsort(ranking, count, sizeof *ranking, compare);
    return count;
}
