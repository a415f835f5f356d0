#!/usr/bin/env python3
"""Time from the first bad request to guardian's revert commit, with the real daemon.

For each run: a git repository the "app" is deployed from, a JSON-lines access log with ten
minutes of history at 1% errors, `guardian run` following it with a rollback configured, traffic
at RATE requests a second; then a bad commit is deployed and notified, the app starts failing
(an outage: every request; or x3: three times the error rate), and the clock stops at the
revert commit guardian makes. Prints each run and the median.

    python3 bench/time-to-revert.py [RUNS] [RATE]        (defaults: 5 runs, 50 req/s)
Needs a release build: cargo build --release.
"""
import json, os, random, statistics, subprocess, sys, tempfile, threading, time, urllib.request

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
RATE = int(sys.argv[2]) if len(sys.argv) > 2 else 50
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "guardian")
TOKEN = "bench-token-0123456789abcdef"


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@x"] + list(args),
                          check=True, capture_output=True, text=True).stdout.strip()


def one_run(bad_rate, seed):
    rnd = random.Random(seed)
    d = tempfile.mkdtemp(prefix="ttr-")
    repo, log = os.path.join(d, "app"), os.path.join(d, "access.jsonl")
    os.makedirs(repo)
    git(repo, "init", "-q", "-b", "main")
    open(os.path.join(repo, "mode"), "w").write("ok\n")
    git(repo, "add", "mode"); git(repo, "commit", "-qm", "v1")
    open(os.path.join(d, "token"), "w").write(TOKEN)
    now = time.time()
    with open(log, "w") as f:
        for i in range(600 * RATE):
            ts = now - 600 + i / RATE
            f.write('{"ts": %.3f, "status": %d, "latency_ms": 20}\n' % (ts, 500 if rnd.random() < 0.01 else 200))
    cfg = os.path.join(d, "guardian.toml")
    open(cfg, "w").write(f'''[detector]
baseline_secs = 600
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:0"
token_file = "{d}/token"
[[daemon.logs]]
path = "{log}"
[daemon.rollback]
repo = "{repo}"
hook = ["true"]
verify_secs = 5
''')
    p = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.PIPE, text=True)
    api = None
    while api is None:
        line = p.stderr.readline()
        if "API listening on " in line:
            api = "http://" + line.split("API listening on ")[1].strip()
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    state = {"bad": False, "first_bad": None, "stop": False}

    def traffic():
        with open(log, "a") as f:
            while not state["stop"]:
                t = time.time()
                rate = bad_rate if state["bad"] else 0.01
                status = 500 if rnd.random() < rate else 200
                if state["bad"] and state["first_bad"] is None:
                    state["first_bad"] = t
                f.write('{"ts": %.3f, "status": %d, "latency_ms": 20}\n' % (t, status)); f.flush()
                time.sleep(1.0 / RATE)
    th = threading.Thread(target=traffic); th.start()
    time.sleep(2)
    open(os.path.join(repo, "mode"), "w").write("broken\n")
    git(repo, "commit", "-qam", "bad")
    sha = git(repo, "rev-parse", "HEAD")
    req = urllib.request.Request(api + "/v1/changes", data=json.dumps({"commit": sha}).encode(),
                                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    state["bad"] = True
    reverted = None
    deadline = time.time() + 300
    while reverted is None and time.time() < deadline:
        if git(repo, "rev-parse", "HEAD") != sha:
            reverted = time.time()
        time.sleep(0.05)
    state["stop"] = True; th.join(); p.terminate(); p.wait()
    subprocess.run(["rm", "-rf", d])
    return None if reverted is None else reverted - state["first_bad"]


for name, bad in [("outage (every request fails)", 1.0), ("errors x3 (1% -> 3%)", 0.03)]:
    times = []
    for r in range(RUNS):
        t = one_run(bad, r)
        print(f"{name}, run {r + 1}: " + ("not reverted within 300 s" if t is None else f"{t:.1f} s"), flush=True)
        if t is not None:
            times.append(t)
    if times:
        print(f"{name}: median {statistics.median(times):.1f} s over {len(times)} of {RUNS} runs at {RATE} req/s\n", flush=True)
