# Checks a flashsale draw: python3 verify_draw.py DRAW.json|- [COMMITMENT]. Exit 0: it checks out.
import hashlib, json, sys
def check(ok, why): ok or sys.exit(f"the draw does not check out: {why}")
try:
    doc = json.load(sys.stdin if sys.argv[1] == "-" else open(sys.argv[1]))
    seed = bytes.fromhex(doc["seed"])
    check(len(seed) == 32 and seed.hex() == doc["seed"] and hashlib.sha256(seed).hexdigest() == doc["commitment"], "the seed does not match the commitment")
    check(len(sys.argv) < 3 or sys.argv[2].lower() == doc["commitment"], "not the commitment published before the sale")
    check(doc["entrants"] == sorted(set(doc["entrants"])), "the entrants are not ascending, each once")
    ranked = sorted(doc["entrants"], key=lambda user: (hashlib.sha256(seed + user.to_bytes(8, "big")).digest(), user))
    check(doc["winners"] == [{"user": u, "ticket": t} for t, u in enumerate(ranked[: doc["capacity"]], 1)], "the winners are not the rule's")
    print(f"draw of sale {doc['sale']}: {len(doc['entrants'])} entrants, {min(len(ranked), doc['capacity'])} winners, seed matches commitment {doc['commitment']}: OK")
except (OSError, ValueError, LookupError, TypeError, AttributeError, OverflowError) as e:
    print(f"not a flashsale draw document: {e!r}", file=sys.stderr)
    sys.exit(2)
