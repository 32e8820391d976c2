"""submitit against a live cluster, as its users write it: a function submitted and its
result fetched, map_array over three inputs, and a cancel. Prints one JSON object."""
import json
import sys
import time

import submitit


def add(a, b):
    return a + b


def slow():
    time.sleep(600)


def main(folder):
    ex = submitit.AutoExecutor(folder=folder)
    ex.update_parameters(timeout_min=5, slurm_partition="cpu", cpus_per_task=1, mem_gb=1)
    out = {"executor": ex.cluster}
    job = ex.submit(add, 2, 3)
    out["job_id"] = job.job_id
    out["result"] = job.result()
    jobs = ex.map_array(add, [1, 2, 3], [10, 20, 30])
    out["array_ids"] = [j.job_id for j in jobs]
    out["array_results"] = [j.result() for j in jobs]
    out["array_states"] = [j.watcher.get_state(j.job_id, mode="force") for j in jobs]
    victim = ex.submit(slow)
    deadline = time.time() + 60
    while victim.state not in ("RUNNING",) and time.time() < deadline:
        time.sleep(0.5)
    victim.cancel(check=True)
    state = ""
    while time.time() < deadline:
        state = victim.watcher.get_state(victim.job_id, mode="force")
        if state not in ("PENDING", "RUNNING", "UNKNOWN", "COMPLETING"):
            break
        time.sleep(0.5)
    out["cancelled_state"] = state
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
