#!/usr/bin/env python3
"""Generates the recorded traffic samples in testdata/, deterministically (seeded).

    python3 testdata/make_sample.py          # rewrites the samples next to this script

Every sample is traffic of one web service around a change that landed at
ts 1764000000 (2025-11-24 16:00:00 UTC). Requests arrive as a Poisson process
whose rate drifts slowly (+-15%), on three routes with their own lognormal
latencies, with about 1% server errors (5xx) and some 404s, which are client
errors and do not count against the service.

- bad_deploy.jsonl: 35 minutes before the change, then 5 minutes in which
  /checkout fails about 30% of the time. guardian calls it regressed.
- healthy_deploy.jsonl: 32 minutes before, 31 minutes after, nothing changes.
  guardian calls it healthy when the 30-minute watch window ends.
- outage.nginx.log: nginx access log (combined + $request_time, local time
  +0100), 31 minutes before, then 3 minutes in which most requests get a
  502 or 503 fast. guardian calls it regressed within seconds.

Python 3 standard library only. Numbers are written with fixed decimals so the
files are the same byte for byte on every Python 3.
"""

import math
import os
import random

CHANGE_AT = 1764000000
HERE = os.path.dirname(os.path.abspath(__file__))

# route, share of traffic, median latency (ms), lognormal sigma
ROUTES = [
    ("/api/products", 0.55, 40.0, 0.5),
    ("/api/cart", 0.30, 60.0, 0.5),
    ("/checkout", 0.15, 180.0, 0.6),
]
BASE_ERROR_RATE = 0.01
CLIENT_ERROR_RATE = 0.02


def arrivals(rnd, start, end, rate):
    """Request times in [start, end): Poisson arrivals at a rate that drifts slowly."""
    t = float(start)
    while True:
        drift = 1.0 + 0.15 * math.sin(2 * math.pi * (t - start) / 1500.0)
        t += rnd.expovariate(rate * drift)
        if t >= end:
            return
        yield t


def pick_route(rnd):
    u = rnd.random()
    for route in ROUTES:
        u -= route[1]
        if u < 0:
            return route
    return ROUTES[-1]


def request(rnd, t, checkout_error_rate=None, outage_rate=None):
    """(status, latency_ms, route) of one request at time t."""
    name, _, median, sigma = pick_route(rnd)
    latency = rnd.lognormvariate(math.log(median), sigma)
    error_rate = BASE_ERROR_RATE
    if checkout_error_rate is not None and name == "/checkout":
        error_rate = checkout_error_rate
    if outage_rate is not None:
        error_rate = outage_rate
    u = rnd.random()
    if u < error_rate:
        status = rnd.choice([500, 500, 502, 503])
        # Failures are mostly fast (a dependency refused), some time out.
        latency = rnd.uniform(2.0, 15.0) if rnd.random() < 0.8 else rnd.uniform(1000.0, 3000.0)
    elif name == "/api/products" and u < error_rate + CLIENT_ERROR_RATE:
        status = 404
    else:
        status = 200
    return status, latency, name


def jsonl_line(t, status, latency, route):
    return '{"ts":%.3f,"status":%d,"latency_ms":%.1f,"route":"%s"}\n' % (t, status, latency, route)


def write_jsonl(path, seed, before, after, rate, checkout_error_rate_after=None):
    rnd = random.Random(seed)
    with open(path, "w", newline="\n") as out:
        for t in arrivals(rnd, CHANGE_AT - before, CHANGE_AT + after, rate):
            bad = checkout_error_rate_after if t >= CHANGE_AT else None
            out.write(jsonl_line(t, *request(rnd, t, checkout_error_rate=bad)))


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
    "okhttp/4.12.0",
]


def time_local(t):
    """nginx $time_local for unix seconds t, in +0100, computed by hand (no tz database)."""
    secs = int(t) + 3600
    days, rem = divmod(secs, 86400)
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return "%02d/%s/%04d:%02d:%02d:%02d +0100" % (
        day, MONTHS[month - 1], year, rem // 3600, rem // 60 % 60, rem % 60)


def write_nginx(path, seed, before, after, rate, outage_rate):
    rnd = random.Random(seed)
    with open(path, "w", newline="\n") as out:
        for t in arrivals(rnd, CHANGE_AT - before, CHANGE_AT + after, rate):
            status, latency, route = request(rnd, t, outage_rate=outage_rate if t >= CHANGE_AT else None)
            if route == "/api/products":
                target = "/api/products/%d" % rnd.randint(1000, 99999)
            elif route == "/api/cart":
                target = "/api/cart?session=%08x" % rnd.getrandbits(32)
            else:
                target = route
            method = "POST" if route == "/checkout" else "GET"
            size = 0 if status >= 500 else rnd.randint(200, 9000)
            out.write('198.51.100.%d - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s" %.3f\n' % (
                rnd.randint(1, 254), time_local(t), method, target, status, size,
                rnd.choice(AGENTS), latency / 1000.0))


def main():
    write_jsonl(os.path.join(HERE, "bad_deploy.jsonl"), seed=1,
                before=35 * 60, after=5 * 60, rate=10.0, checkout_error_rate_after=0.30)
    write_jsonl(os.path.join(HERE, "healthy_deploy.jsonl"), seed=2,
                before=32 * 60, after=31 * 60, rate=10.0)
    write_nginx(os.path.join(HERE, "outage.nginx.log"), seed=3,
                before=31 * 60, after=3 * 60, rate=2.0, outage_rate=0.8)


if __name__ == "__main__":
    main()
