"""A distributed rendezvous, as a training launcher does one: every task connects to
task 0 at MASTER_ADDR:MASTER_PORT and says who it is; task 0 checks it heard every
SLURM_PROCID once, SLURM_LOCALID 0..k-1 on each SLURM_NODEID, one GPU per task (when
--gpus-per-task=1) distinct on its node, and CPU sets that do not overlap on a node.
Task 0 prints RENDEZVOUS OK, or what was wrong, and exits 0 or 1."""

import json
import os
import socket
import sys
import time


def me():
    return {
        "procid": int(os.environ["SLURM_PROCID"]),
        "localid": int(os.environ["SLURM_LOCALID"]),
        "nodeid": int(os.environ["SLURM_NODEID"]),
        "node": os.environ["SLURMD_NODENAME"],
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "cpus": os.environ.get("GANTRY_TASK_CPUS", ""),
    }


def serve(addr, port, ntasks, one_gpu):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(ntasks)
    srv.settimeout(120)
    heard = [me()]
    while len(heard) < ntasks:
        conn, _ = srv.accept()
        with conn:
            heard.append(json.loads(conn.makefile().readline()))
            conn.sendall(b"ok\n")
    problems = []
    procids = sorted(h["procid"] for h in heard)
    if procids != list(range(ntasks)):
        problems.append(f"procids {procids}")
    nodes = {}
    for h in heard:
        nodes.setdefault(h["nodeid"], []).append(h)
    for nodeid, tasks in sorted(nodes.items()):
        names = {t["node"] for t in tasks}
        if len(names) != 1:
            problems.append(f"node {nodeid} is {names}")
        local = sorted(t["localid"] for t in tasks)
        if local != list(range(len(tasks))):
            problems.append(f"node {nodeid} localids {local}")
        if one_gpu:
            gpus = [t["gpus"] for t in tasks]
            if any("," in g or g == "" for g in gpus) or len(set(gpus)) != len(gpus):
                problems.append(f"node {nodeid} gpus {gpus}")
        seen = set()
        for t in tasks:
            cpus = set(t["cpus"].split(","))
            if seen & cpus:
                problems.append(f"node {nodeid} cpus overlap at task {t['procid']}")
            seen |= cpus
    print(f"NODES {len(nodes)} TASKS {len(heard)}")
    if problems:
        print("RENDEZVOUS FAILED: " + "; ".join(problems))
        return 1
    print("RENDEZVOUS OK")
    return 0


def join(addr, port):
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection((addr, port), timeout=10) as s:
                s.sendall((json.dumps(me()) + "\n").encode())
                return 0 if s.makefile().readline().strip() == "ok" else 1
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    addr = os.environ["MASTER_ADDR"]
    port = int(os.environ["MASTER_PORT"])
    ntasks = int(os.environ["SLURM_NTASKS"])
    one_gpu = "--one-gpu" in sys.argv
    if int(os.environ["SLURM_PROCID"]) == 0:
        sys.exit(serve(addr, port, ntasks, one_gpu))
    sys.exit(join(addr, port))
