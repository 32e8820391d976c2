/*
 * A priority policy: quality of service first, then the longest wait. Gantry asks it
 * once per scheduling cycle for one priority per waiting job; the highest starts first.
 *
 * Edit gantry_prioritize (and gantry_priority_fields, if it reads other columns),
 * build with `make`, check with `gantry policy test`. gantry/gantry.h says what each
 * column holds and what a policy may use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

const char gantry_policy_name[] = "__NAME__";
const char gantry_policy_version[] = "0.1.0";

/* Priority points per second waited. Globals live as long as one loaded instance:
 * they start afresh (then gantry_init) on every load, re-instantiation and restart. */
static int64_t age_weight = 1;

static char message[128];

/* One line of the configuration: `age_weight = 0 to 1000000`. */
static const char *setting(int line_no, const char *text, void *ctx) {
    (void)ctx;
    long long value;
    char rest;
    if (sscanf(text, "age_weight = %lld %c", &value, &rest) == 1 && value >= 0 &&
        value <= 1000000) {
        age_weight = value;
        return NULL;
    }
    snprintf(message, sizeof message, "line %d: expected age_weight = 0 to 1000000", line_no);
    return message;
}

const char *gantry_init(const char *config, size_t len) {
    (void)len;
    age_weight = 1;
    const char *refused = gantry_config_lines(config, setting, NULL);
    if (!refused) gantry_log(GANTRY_INFO, "ready: age weight %lld", (long long)age_weight);
    return refused;
}

/* Only the columns named here cross into the component each cycle. */
uint32_t gantry_priority_fields(void) {
    return GANTRY_QOS_PRIORITY | GANTRY_AGE;
}

void gantry_prioritize(int64_t now, const gantry_jobs *jobs, int64_t *priorities) {
    (void)now;
    for (uint32_t i = 0; i < jobs->len; i++) {
        int64_t age = jobs->age[i] > 0 ? jobs->age[i] : 0;
        /* The QOS part is far above any age (capped so that the sum cannot overflow). */
        uint32_t qos = jobs->qos_priority[i] < (1u << 22) ? jobs->qos_priority[i] : (1u << 22);
        priorities[i] = ((int64_t)qos << 40) + age * age_weight;
    }
}
