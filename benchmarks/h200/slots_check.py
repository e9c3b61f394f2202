"""Did a run over several GPUs keep its promises? Read from its results, logs and nvidia-smi.

    python benchmarks/h200/slots_check.py --results results --logs logs \\
        --apps compute-apps.csv --json slots-check.json

From the speed and latency results (each timed cell's provenance: ``gpu_slot`` and its start
and end), the steps' logs (each GPU step's ``gpu slot: GPU k (UUID, model)..., pid P`` line)
and nvidia-smi's process list sampled during the run (``--query-compute-apps=timestamp,pid,
gpu_uuid,used_memory --format=csv,noheader -l 1``, run.sh's compute-apps.csv):

- ``per_gpu``: the timed cells each GPU ran (several GPUs used, or not);
- ``overlaps``: timed cells that ran on one GPU at the same time (none, or the slots failed);
- ``shared_cores``: timed cells on two GPUs at the same time that shared a CPU (none);
- ``processes``: each step process nvidia-smi saw on a GPU against the GPU its log says it
  was given: ``matched``, ``mismatched`` (a runtime that used another GPU than its slot's)
  and ``unknown`` (pids no log names: other processes, or a container's own pid numbers).

Prints one line per finding and the JSON; exits 1 if any overlap, shared core or mismatch.
"""

import argparse
import csv
import datetime
import glob
import json
import os
import re
import sys

SLOT_LINE = re.compile(r"^gpu slot: GPU (\d+) \((\S+), .*\bpid (\d+)$")


def stamp(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def timed_cells(results):
    """[{cell, slot, start, end}] of every speed and latency result that holds a GPU slot."""
    found = []
    for kind in ("speed", "latency"):
        for path in sorted(glob.glob(os.path.join(results, kind, "*", "*", "*.json"))):
            with open(path) as f:
                record = json.load(f)
            provenance = record.get("provenance", {})
            slot = provenance.get("gpu_slot")
            if slot:
                cell = record["cell"]
                name = f"{kind} {cell['runtime']}/{cell['model']}/{cell['precision']}/bs{cell['batch_size']}"
                start, end = stamp(provenance["started"]), stamp(provenance["finished"])
                found.append({"cell": name, "slot": slot, "start": start, "end": end})
    return found


def overlapping(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def check_cells(cells):
    """(cells per GPU, overlaps on one GPU, shared cores between GPUs at the same time)."""
    per_gpu, overlaps, shared = {}, [], []
    for cell in cells:
        per_gpu.setdefault(cell["slot"]["uuid"], []).append(cell["cell"])
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            if not overlapping(a, b):
                continue
            if a["slot"]["uuid"] == b["slot"]["uuid"]:
                overlaps.append([a["cell"], b["cell"]])
            elif set(a["slot"].get("cpus") or []) & set(b["slot"].get("cpus") or []):
                shared.append([a["cell"], b["cell"]])
    return {uuid: len(names) for uuid, names in sorted(per_gpu.items())}, overlaps, shared


def slots_of_logs(logs):
    """{pid: GPU UUID} from every step log's ``gpu slot:`` line."""
    given = {}
    for path in glob.glob(os.path.join(logs, "**", "*.log"), recursive=True):
        with open(path, errors="replace") as f:
            for line in f:
                match = SLOT_LINE.match(line.strip())
                if match:
                    given[int(match.group(3))] = match.group(2)
    return given


def check_processes(apps, given):
    """nvidia-smi's (pid, GPU UUID) samples against the slots the logs name."""
    matched, mismatched, unknown = set(), set(), set()
    if apps and os.path.exists(apps):
        with open(apps) as f:
            for row in csv.reader(f, skipinitialspace=True):
                if len(row) < 3 or not row[1].strip().isdigit():
                    continue
                pid, uuid = int(row[1]), row[2].strip()
                if pid not in given:
                    unknown.add(pid)
                elif given[pid] == uuid:
                    matched.add(pid)
                else:
                    mismatched.add((pid, given[pid], uuid))
    return {
        "matched": len(matched),
        "mismatched": [{"pid": p, "slot": s, "ran_on": r} for p, s, r in sorted(mismatched)],
        "unknown": len(unknown),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--logs", default="logs")
    parser.add_argument("--apps", help="nvidia-smi --query-compute-apps samples (CSV)")
    parser.add_argument("--json", help="write the findings here too")
    args = parser.parse_args()
    per_gpu, overlaps, shared = check_cells(timed_cells(args.results))
    processes = check_processes(args.apps, slots_of_logs(args.logs))
    findings = {"per_gpu": per_gpu, "overlaps": overlaps, "shared_cores": shared, "processes": processes}
    print(f"timed cells per GPU: {per_gpu}")
    print(f"timed cells at once on one GPU: {overlaps or 'none'}")
    print(f"timed cells at once on two GPUs sharing a core: {shared or 'none'}")
    print(
        f"step processes nvidia-smi saw: {processes['matched']} on their slot's GPU, "
        f"{len(processes['mismatched'])} on another {processes['mismatched'] or ''}, {processes['unknown']} unknown"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(findings, f, indent=1)
    sys.exit(1 if overlaps or shared or processes["mismatched"] else 0)


if __name__ == "__main__":
    main()
