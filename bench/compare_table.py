"""Prints bench/compare.sh's table from `name|ours-json|redis-json` lines on stdin."""
import json
import sys


def lat(report, q):
    return (report.get("latency_all_ms") or {}).get(q, float("nan"))


def ratio(a, b):
    return a / b if b else float("inf")


def verdict(report):
    return "ok" if report["ok"] else "VIOLATED"


head = (
    f"{'workload':<42} {'ours ans/s':>11} {'redis ans/s':>11} {'x':>6} |"
    f" {'p50 ours':>9} {'redis':>9} {'x':>6} | {'p99 ours':>9} {'redis':>9} {'x':>6} | invariants"
)
print(head)
print("-" * len(head))
for line in sys.stdin:
    name, ours, redis = line.rstrip("\n").split("|", 2)
    o, r = json.loads(ours), json.loads(redis)
    print(
        f"{name:<42} {o['answers_per_sec']:>11.0f} {r['answers_per_sec']:>11.0f}"
        f" {ratio(o['answers_per_sec'], r['answers_per_sec']):>5.1f}x |"
        f" {lat(o, 'p50'):>9.2f} {lat(r, 'p50'):>9.2f} {ratio(lat(r, 'p50'), lat(o, 'p50')):>5.1f}x |"
        f" {lat(o, 'p99'):>9.2f} {lat(r, 'p99'):>9.2f} {ratio(lat(r, 'p99'), lat(o, 'p99')):>5.1f}x |"
        f" {verdict(o)} / {verdict(r)}"
    )
print()
print("answers/s: higher is better; latency in ms from each request's intended start, lower is better;")
print("x = how many times better ours is. Redis runs with appendonly yes, appendfsync always.")
