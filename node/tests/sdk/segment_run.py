"""Drives the real Segment Python library against a SessionDB node.

Usage: segment_run.py <node base URL> <ingest key> <visitors> <gzip: 0|1>

Sends, through `segment.analytics.Client` with the node as its host and the
project's ingest key as its write key, an `Experiment Viewed` decision per
visitor, a page view, and for some visitors an `Order Completed` with
revenue; then flushes. Prints one JSON object: what was sent per variation
(visitors, converters, revenue) and every error the library reported.
"""

import json
import sys

from segment.analytics.client import Client

EXPERIMENT = "checkout-redesign"
ORDER = "Order Completed"
REVENUE = 59.5


def main():
    base_url, write_key = sys.argv[1], sys.argv[2]
    visitors, gzip = int(sys.argv[3]), sys.argv[4] == "1"
    errors = []
    client = Client(
        write_key=write_key,
        host=base_url.rstrip("/"),
        gzip=gzip,
        max_retries=2,
        on_error=lambda error, batch: errors.append(f"{error!r}"),
    )
    tally = {}
    for index in range(visitors):
        user = f"user-{index}"
        variation = "b" if index % 2 else "a"
        client.track(
            user_id=user,
            event="Experiment Viewed",
            properties={"experiment_id": EXPERIMENT, "variation_id": variation},
        )
        client.page(user_id=user, name="Checkout")
        counts = tally.setdefault(variation, {"visitors": 0, "converters": 0, "revenue": 0.0})
        counts["visitors"] += 1
        # A real effect: b converts one visitor in three, a one in four.
        converts = index % 3 == 0 if variation == "b" else index % 4 == 0
        if converts:
            client.track(user_id=user, event=ORDER, properties={"revenue": REVENUE})
            counts["converters"] += 1
            counts["revenue"] += REVENUE
    # Waits until the library's consumer thread has posted every queued
    # message (or given up on it, calling on_error).
    client.flush()
    client.join()
    print(json.dumps({"tally": tally, "errors": errors}))


if __name__ == "__main__":
    main()
