"""Drives the real Optimizely Python SDK against a SessionDB node.

Usage: optimizely_run.py <node base URL> <ingest key> <visitors>

The SDK buckets every visitor into the datafile's experiment (`activate`)
and sends its own impression and conversion payloads through a custom
event dispatcher that posts them, unchanged, to the node's Optimizely
endpoint. Prints one JSON object: the SDK's own tally per variation id
(visitors, converters, revenue) and every answer status the node gave.
"""

import json
import sys
import urllib.request

from optimizely import optimizely
from optimizely.event.event_processor import ForwardingEventProcessor

EXPERIMENT_KEY = "checkout_flow"
EVENT_KEY = "purchase"
REVENUE_CENTS = 1299

DATAFILE = {
    "version": "4",
    "revision": "1",
    "accountId": "8000",
    "projectId": "8231990343",
    "anonymizeIP": False,
    "botFiltering": False,
    "attributes": [{"id": "71001", "key": "browser"}],
    "audiences": [],
    "typedAudiences": [],
    "groups": [],
    "rollouts": [],
    "featureFlags": [],
    "variables": [],
    "events": [{"id": "72001", "key": EVENT_KEY, "experimentIds": ["70001"]}],
    "experiments": [
        {
            "id": "70001",
            "key": EXPERIMENT_KEY,
            "layerId": "70000",
            "status": "Running",
            "audienceIds": [],
            "forcedVariations": {},
            "variations": [
                {"id": "70011", "key": "control", "variables": []},
                {"id": "70012", "key": "treatment", "variables": []},
            ],
            "trafficAllocation": [
                {"entityId": "70011", "endOfRange": 5000},
                {"entityId": "70012", "endOfRange": 10000},
            ],
        }
    ],
}


class NodeDispatcher:
    """Posts the SDK's LogEvent body to the node instead of logx.optimizely.com."""

    def __init__(self, base_url, ingest_key):
        self.url = base_url.rstrip("/") + "/optimizely/v1/events"
        self.ingest_key = ingest_key
        self.statuses = []

    def dispatch_event(self, log_event):
        body = json.dumps(log_event.params).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-SessionDB-Key": self.ingest_key,
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            self.statuses.append(answer.status)
            answer.read()


def main():
    base_url, ingest_key, visitors = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dispatcher = NodeDispatcher(base_url, ingest_key)
    client = optimizely.Optimizely(
        datafile=json.dumps(DATAFILE),
        event_dispatcher=dispatcher,
        event_processor=ForwardingEventProcessor(dispatcher),
    )
    if not client.is_valid:
        raise SystemExit("the SDK refused the datafile")
    variation_ids = {
        variation["key"]: variation["id"]
        for variation in DATAFILE["experiments"][0]["variations"]
    }
    tally = {}
    for index in range(visitors):
        user = f"user-{index}"
        attributes = {"browser": "firefox" if index % 2 else "chrome"}
        variation_key = client.activate(EXPERIMENT_KEY, user, attributes)
        if variation_key is None:
            raise SystemExit(f"the SDK bucketed {user} into no variation")
        counts = tally.setdefault(
            variation_ids[variation_key], {"visitors": 0, "converters": 0, "revenue": 0}
        )
        counts["visitors"] += 1
        # A real effect: treatment converts one visitor in three, control
        # one in five.
        converts = index % 3 == 0 if variation_key == "treatment" else index % 5 == 0
        if converts:
            client.track(EVENT_KEY, user, attributes, {"revenue": REVENUE_CENTS})
            counts["converters"] += 1
            counts["revenue"] += REVENUE_CENTS
    client.close()
    print(json.dumps({"tally": tally, "statuses": dispatcher.statuses}))


if __name__ == "__main__":
    main()
