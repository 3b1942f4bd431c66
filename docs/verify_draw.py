# Checks a flashsale draw: python3 verify_draw.py DRAW.json|- [COMMITMENT]. Exit 0: it checks out; 1: it does not; 2: no draw document.
import hashlib, json, sys
sys.excepthook = lambda kind, error, trace: print(f"not a flashsale draw document: {error!r}", file=sys.stderr) or sys.exit(2)
doc = json.load(sys.stdin if sys.argv[1] == "-" else open(sys.argv[1]))
seed, published = bytes.fromhex(doc["seed"]), (sys.argv[2] if len(sys.argv) > 2 else doc["commitment"]).lower()
if not (len(seed) == 32 and seed.hex() == doc["seed"] and hashlib.sha256(seed).hexdigest() == doc["commitment"] == published): sys.exit("the draw does not check out: the seed does not match the commitment")
if doc["entrants"] != sorted(set(doc["entrants"])): sys.exit("the draw does not check out: the entrants are not ascending, each once")
ranked = sorted(doc["entrants"], key=lambda user: (hashlib.sha256(seed + user.to_bytes(8, "big")).digest(), user))
if doc["winners"] != [{"user": u, "ticket": t} for t, u in enumerate(ranked[: doc["capacity"]], 1)]: sys.exit("the draw does not check out: the winners are not the rule's")
print(f"draw of sale {doc['sale']}: {len(doc['entrants'])} entrants, {len(doc['winners'])} winners, seed matches commitment {doc['commitment']}: OK")
