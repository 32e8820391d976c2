/*
 * A fairshare policy: an account or user that used less than its share of the cluster
 * gets a factor near 1, one that used more a factor near 0. Gantry asks it for one
 * factor in [0, 1] per node of the share tree (accounts, then user associations) every
 * fairshare interval; priority policies read a job's factor as `fairshare`.
 *
 * Edit gantry_fairshare_factors, build with `make`, check with `gantry policy test`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

const char gantry_policy_name[] = "__NAME__";
const char gantry_policy_version[] = "0.1.0";

/* How steeply the factor falls as usage passes the share: 1 / (1 + k * used / share).
 * Globals start afresh (then gantry_init) on every load, re-instantiation and restart. */
static double steepness = 1.0;

static char message[128];

/* One line of the configuration: `steepness = NUMBER` (> 0). */
static const char *setting(int line_no, const char *text, void *ctx) {
    (void)ctx;
    double value;
    char rest;
    if (sscanf(text, "steepness = %lf %c", &value, &rest) == 1 && value > 0 && value < 1e300) {
        steepness = value;
        return NULL;
    }
    snprintf(message, sizeof message, "line %d: expected steepness = NUMBER > 0", line_no);
    return message;
}

const char *gantry_init(const char *config, size_t len) {
    (void)len;
    steepness = 1.0;
    return gantry_config_lines(config, setting, NULL);
}

void gantry_fairshare_factors(int64_t now, const gantry_share_tree *tree, double *factors) {
    (void)now;
    uint32_t n = tree->len;
    /* Each node's share of its siblings' shares, then of the whole cluster. */
    double *siblings = calloc(n ? n : 1, sizeof(double));
    double *share = calloc(n ? n : 1, sizeof(double));
    double roots = 0, total_usage = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (tree->parent[i] < i) {
            siblings[tree->parent[i]] += tree->shares[i];
        } else {
            roots += tree->shares[i];
            total_usage += tree->usage[i];
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = tree->parent[i];
        double of = p < i ? siblings[p] : roots, above = p < i ? share[p] : 1.0;
        share[i] = of > 0 ? above * tree->shares[i] / of : 0.0;
        double used = total_usage > 0 ? tree->usage[i] / total_usage : 0.0;
        if (share[i] <= 0) {
            factors[i] = used > 0 ? 0.0 : 0.5;
        } else {
            factors[i] = 1.0 / (1.0 + steepness * used / share[i]);
        }
    }
    free(siblings);
    free(share);
}
