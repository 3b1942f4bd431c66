#!/usr/bin/env python3
"""Per-tier memory and CPU of a crowd run (bench/crowd.sh).

    crowd_table.py sample FILE LABEL TIER:PID ...   append one sample per process
    crowd_table.py table FILE CONNECTIONS           print the per-tier table

A sample is a JSON line: label, tier, pid, RSS (VmRSS of /proc/PID/status,
KiB) and CPU time (utime + stime of /proc/PID/stat, seconds). A process that
has exited is left out of the sample.
"""
import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")
LABELS = ("before", "open", "after")


def read(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces: fields start after its ")".
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15; fields[0] is field 3.
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        return rss, cpu
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def sample(path, label, procs):
    with open(path, "a") as out:
        for proc in procs:
            tier, pid = proc.split(":")
            got = read(pid)
            if got:
                out.write(json.dumps({"label": label, "tier": tier, "pid": pid,
                                      "rss_kib": got[0], "cpu_s": got[1]}) + "\n")


def table(path, connections):
    rows = [json.loads(l) for l in open(path)]
    tiers = []
    for r in rows:
        if r["tier"] not in tiers:
            tiers.append(r["tier"])
    # tier -> label -> (rss KiB summed over processes, cpu s summed, processes)
    sums = {t: {l: [0, 0.0, 0] for l in LABELS} for t in tiers}
    for r in rows:
        s = sums[r["tier"]][r["label"]]
        s[0] += r["rss_kib"]
        s[1] += r["cpu_s"]
        s[2] += 1
    print(f"per-tier resources, {connections} users (a held stream each), figures summed over a tier's processes")
    print(f"  {'tier':<9} {'procs':>5} {'RSS before':>11} {'RSS open':>10} {'RSS after':>10} "
          f"{'KiB/conn':>9} {'CPU s':>7} {'CPU us/conn':>12}")
    for t in tiers:
        b, o, a = (sums[t][l] for l in LABELS)
        procs = max(b[2], o[2], a[2])
        mem = (o[0] - b[0]) / connections
        cpu = a[1] - b[1]
        print(f"  {t:<9} {procs:>5} {b[0] / 1024:>9.1f} M {o[0] / 1024:>8.1f} M {a[0] / 1024:>8.1f} M "
              f"{mem:>9.2f} {cpu:>7.2f} {cpu * 1e6 / connections:>12.1f}")
    print("  KiB/conn: (RSS with every stream open - RSS before) / users;"
          " CPU: from before the streams opened to after the burst.")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "table":
        table(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
