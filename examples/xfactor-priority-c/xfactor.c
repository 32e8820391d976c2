/*
 * Largest expansion factor first, in C: the same policy as examples/xfactor-priority
 * (Rust), answer for answer. A job's expansion factor is (age + time_limit) /
 * time_limit; jobs without a time limit count as `unlimited_as_s` long (default one
 * day); `boost_gpu_jobs` is added for jobs that use GPUs. The priority is the sum
 * times 1000, truncated.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gantry.h"

const char gantry_policy_name[] = "xfactor-c";
const char gantry_policy_version[] = "0.1.0";

static int64_t unlimited_as_s = 86400;
static double boost_gpu_jobs = 0.0;

static char message[128];

/* One `key = value` line of the configuration, trimmed; the messages are the Rust
 * example's, word for word. */
static const char *setting(int line_no, const char *text, void *ctx) {
    (void)ctx;
    const char *eq = strchr(text, '=');
    if (!eq) {
        snprintf(message, sizeof message, "line %d: expected key = value", line_no);
        return message;
    }
    size_t klen = (size_t)(eq - text);
    while (klen > 0 && isspace((unsigned char)text[klen - 1])) klen--;
    const char *value = eq + 1;
    while (isspace((unsigned char)*value)) value++;
    char *stop;
    errno = 0;
    if (klen == 14 && !memcmp(text, "unlimited_as_s", 14)) {
        long long v = strtoll(value, &stop, 10);
        if (!*value || *stop || errno || v <= 0) {
            snprintf(message, sizeof message,
                     "line %d: unlimited_as_s must be a positive integer", line_no);
            return message;
        }
        unlimited_as_s = v;
    } else if (klen == 14 && !memcmp(text, "boost_gpu_jobs", 14)) {
        double v = strtod(value, &stop);
        if (!*value || *stop || !isfinite(v) || v < 0) {
            snprintf(message, sizeof message, "line %d: boost_gpu_jobs must be a number >= 0",
                     line_no);
            return message;
        }
        boost_gpu_jobs = v;
    } else {
        snprintf(message, sizeof message, "line %d: unknown key '%.*s'", line_no, (int)klen,
                 text);
        return message;
    }
    return NULL;
}

const char *gantry_init(const char *config, size_t len) {
    (void)len;
    unlimited_as_s = 86400;
    boost_gpu_jobs = 0.0;
    const char *refused = gantry_config_lines(config, setting, NULL);
    if (!refused) {
        gantry_log(GANTRY_INFO, "xfactor ready: unlimited jobs count as %lld s",
                   (long long)unlimited_as_s);
    }
    return refused;
}

uint32_t gantry_priority_fields(void) {
    return GANTRY_AGE | GANTRY_TIME_LIMIT | GANTRY_GPUS;
}

void gantry_prioritize(int64_t now, const gantry_jobs *jobs, int64_t *priorities) {
    (void)now;
    for (uint32_t i = 0; i < jobs->len; i++) {
        int64_t limit = jobs->time_limit[i] > 0 ? jobs->time_limit[i] : unlimited_as_s;
        double length = (double)(limit > 1 ? limit : 1);
        int64_t age = jobs->age[i] > 0 ? jobs->age[i] : 0;
        double x = ((double)age + length) / length;
        double boost = jobs->gpus[i] > 0 ? boost_gpu_jobs : 0.0;
        priorities[i] = (int64_t)((x + boost) * 1000.0);
    }
}
