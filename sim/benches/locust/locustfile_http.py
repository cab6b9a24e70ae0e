"""Locust FastHttpUser peer of fleetsim's PIN checks over HTTP: one user
per door phone, `POST /v1/devices/{device}/validate` with the device's
secret as Bearer and the same body as an MQTT `auth/req`
(docs/reference-server.md).

    DEVICES_JSON=devices.json RATE_PER_USER=2 \
      locust -f locustfile_http.py --headless -u 1000 -r 200 -t 30s --host http://127.0.0.1:8080

An answer that is not "granted" is a failure.
"""

import itertools
import json
import random

from fleet_devices import Peers
from locust import FastHttpUser, constant_throughput, task

PEERS = Peers()


class DoorPhone(FastHttpUser):
    wait_time = constant_throughput(PEERS.rate_per_user)

    def on_start(self):
        dev = PEERS.next_device()
        self.pins = dev["pins"]
        self.path = "/v1/devices/%d/validate" % dev["device"]
        self.headers = {"authorization": "Bearer " + dev["secret"]}
        self.next_id = itertools.count(1)

    @task
    def check_pin(self):
        body = {"id": next(self.next_id), "credential": {"type": "pin", "value": random.choice(self.pins)}}
        with self.client.post(
            self.path, json=body, headers=self.headers, name="validate pin", catch_response=True
        ) as resp:
            if resp.status_code != 200 or json.loads(resp.content).get("decision") != "granted":
                resp.failure("not granted: %s %s" % (resp.status_code, resp.text[:80]))
