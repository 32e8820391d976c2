/*
 * A preemption policy: a blocked job may end (or requeue, or suspend) running jobs of
 * a lower quality of service, the youngest first, until it would fit. Gantry asks it
 * once per cycle for each job that cannot start, with the running jobs it could
 * displace; no victims means "none".
 *
 * Edit gantry_preemption_select, build with `make`, check with `gantry policy test`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

const char gantry_policy_name[] = "__NAME__";
const char gantry_policy_version[] = "0.1.0";

/* Only preempt jobs whose QOS priority is at least this much lower. Globals start
 * afresh (then gantry_init) on every load, re-instantiation and restart. */
static unsigned min_gap = 0;

static char message[128];

/* One line of the configuration: `min_gap = NUMBER` (a QOS priority difference). */
static const char *setting(int line_no, const char *text, void *ctx) {
    (void)ctx;
    unsigned value;
    char rest;
    if (sscanf(text, "min_gap = %u %c", &value, &rest) == 1) {
        min_gap = value;
        return NULL;
    }
    snprintf(message, sizeof message, "line %d: expected min_gap = NUMBER", line_no);
    return message;
}

const char *gantry_init(const char *config, size_t len) {
    (void)len;
    min_gap = 0;
    return gantry_config_lines(config, setting, NULL);
}

/* Lower QOS first, then the youngest (they lose the least work), then by job id. */
static int before(const gantry_candidate *a, const gantry_candidate *b) {
    if (a->qos_priority != b->qos_priority) return a->qos_priority < b->qos_priority;
    if (a->start_time != b->start_time) return a->start_time > b->start_time;
    return a->job < b->job;
}

size_t gantry_preemption_select(int64_t now, const gantry_query *q, gantry_victim *victims) {
    (void)now;
    /* The candidates below the gap, in order (an insertion sort: lists are short). */
    const gantry_candidate **lower = malloc((q->candidates_len + 1) * sizeof *lower);
    size_t n = 0;
    for (size_t i = 0; i < q->candidates_len; i++) {
        const gantry_candidate *c = &q->candidates[i];
        if ((uint64_t)c->qos_priority + min_gap >= q->qos_priority) continue;
        size_t at = n++;
        while (at > 0 && before(c, lower[at - 1])) {
            lower[at] = lower[at - 1];
            at--;
        }
        lower[at] = c;
    }
    uint64_t cores = 0, gpus = 0;
    size_t k = 0;
    for (size_t i = 0; i < n && (cores < q->cores || gpus < q->gpus); i++) {
        cores += lower[i]->cores;
        gpus += lower[i]->gpus;
        /* Each candidate comes with its QOS's preempt mode. */
        victims[k++] = (gantry_victim){lower[i]->job, lower[i]->mode};
    }
    free(lower);
    return k;
}
