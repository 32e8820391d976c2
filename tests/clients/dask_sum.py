"""dask-jobqueue against a live cluster: SLURMCluster scales to two workers (each a
batch job whose output files are named by `%J`), and they compute a sum. Prints one
JSON object."""
import json
import os
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client


def main(folder):
    logs = os.path.join(folder, "dask-logs")
    cluster = SLURMCluster(
        cores=1,
        memory="1GB",
        processes=1,
        queue="cpu",
        walltime="00:05:00",
        log_directory=logs,
        scheduler_options={"host": "127.0.0.1"},
        job_extra_directives=["-o " + os.path.join(folder, "dask-worker-%J.out")],
    )
    out = {"script": cluster.job_script()}
    cluster.scale(2)
    client = Client(cluster)
    client.wait_for_workers(2, timeout=120)
    out["workers"] = len(client.scheduler_info()["workers"])
    out["sum"] = client.submit(sum, [1, 2, 3, 4]).result(timeout=60)
    out["job_ids"] = sorted(int(w.job_id) for w in cluster.workers.values())
    client.close()
    cluster.close()
    out["logs"] = sorted(os.listdir(logs))
    out["outputs"] = sorted(f for f in os.listdir(folder) if f.startswith("dask-worker-"))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
