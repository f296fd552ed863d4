#!/usr/bin/env python3
"""benches/json_load.py — puts N keys into an etcd-compatible server through
its JSON gateway (`/v3/kv/txn`), with nothing but Python's standard library,
so a load needs no build (benches/large_range.sh uses it).

Keys are "%016d" % i for i in 0..N; each value is VAL bytes derived from its
key (the same data on every server). Puts go `--per-txn` to a txn (etcd's
default --max-txn-ops is 128), over `--conns` keep-alive connections.

Usage: benches/json_load.py ENDPOINT N VAL [--per-txn 128] [--conns 8]
"""
import argparse
import base64
import http.client
import json
import queue
import sys
import threading


def value(i, size):
    seed = ("%016d:" % i).encode()
    return (seed * (size // len(seed) + 1))[:size]


def body(first, last, size):
    ops = []
    for i in range(first, last):
        ops.append({"requestPut": {
            "key": base64.b64encode(b"%016d" % i).decode(),
            "value": base64.b64encode(value(i, size)).decode(),
        }})
    return json.dumps({"success": ops}).encode()


def worker(endpoint, size, jobs, errors):
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    while True:
        job = jobs.get()
        if job is None:
            return
        conn.request("POST", "/v3/kv/txn", body(job[0], job[1], size),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 200 or b'"succeeded":true' not in text.replace(b" ", b""):
            errors.append((job, resp.status, text[:200]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("keys", type=int)
    p.add_argument("val", type=int)
    p.add_argument("--per-txn", type=int, default=128)
    p.add_argument("--conns", type=int, default=8)
    a = p.parse_args()
    jobs, errors = queue.Queue(maxsize=4 * a.conns), []
    threads = [threading.Thread(target=worker, args=(a.endpoint, a.val, jobs, errors))
               for _ in range(a.conns)]
    for t in threads:
        t.start()
    for first in range(0, a.keys, a.per_txn):
        jobs.put((first, min(a.keys, first + a.per_txn)))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    if errors:
        print("json_load.py: %d txns failed, first: %r" % (len(errors), errors[0]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
