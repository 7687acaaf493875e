"""Run ``govapp.handle`` for SECONDS seconds (not instrumented itself: every handle() is a trace) and print
what was done as JSON: requests, instrumented calls (9 per request), wall start and end, and the CPU time
this process spent meanwhile (its own threads, the span processor's included)."""
import json
import sys
import time

import govapp

CALLS_PER_REQUEST = 9  # handle, parse, validate, total, price, discount, tax, audit, render


def main(seconds: float) -> None:
    start = time.time()
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for _ in range(100):
            govapp.handle(n)
            n += 1
    cpu = time.process_time() - cpu0  # this process' threads: the program's and recording's
    print(json.dumps({"requests": n, "calls": n * CALLS_PER_REQUEST, "start": start, "end": time.time(),
                      "seconds": seconds, "cpu_s": cpu}))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
