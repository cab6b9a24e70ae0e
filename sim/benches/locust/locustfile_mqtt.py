"""Locust peer of fleetsim's MQTT PIN checks: one Locust user per door
phone, each its own paho-mqtt connection signed in as the device (username
`dev-N`, password its secret), asking `auth/req` at QoS 0 and waiting for
the matching `auth/resp` (docs/protocol.md), as fleetsim's devices do.

    DEVICES_JSON=devices.json BROKER=127.0.0.1:1883 RATE_PER_USER=2 \
      locust -f locustfile_mqtt.py --headless -u 1000 -r 200 -t 30s

Each user asks at RATE_PER_USER checks a second with one of its door's
valid PINs (constant throughput), so -u 1000 with RATE_PER_USER=2 offers
2,000 checks/s. An answer that is not "granted" is a failure, one that
does not come within TIMEOUT_S (2 s, fleetsim's request timeout) too.
"""

import itertools
import json
import os
import random
import time

import gevent
import paho.mqtt.client as mqtt
from gevent.event import AsyncResult
from fleet_devices import Peers
from locust import User, constant_throughput, events, task

PEERS = Peers()
HOST, PORT = os.environ.get("BROKER", "127.0.0.1:1883").rsplit(":", 1)
TIMEOUT_S = float(os.environ.get("TIMEOUT_S", "2"))


class DoorPhone(User):
    wait_time = constant_throughput(PEERS.rate_per_user)

    def on_start(self):
        dev = PEERS.next_device()
        self.pins = dev["pins"]
        name = "dev-%d" % dev["device"]
        base = "fleet/site-%d/%s/" % (dev["site"], name)
        self.req_topic, resp_topic = base + "auth/req", base + "auth/resp"
        self.waiting = {}
        self.next_id = itertools.count(1)
        subscribed = AsyncResult()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=True)
        c.username_pw_set(name, dev["secret"])
        c.on_message = self.on_message
        c.on_subscribe = lambda *_: subscribed.set(True)
        c.on_connect = lambda cl, *_: cl.subscribe(resp_topic, qos=0)
        self.client = c
        c.connect(HOST, int(PORT), keepalive=30)
        # paho's network loop thread (a greenlet under Locust's gevent).
        c.loop_start()
        subscribed.get(timeout=30)

    def on_stop(self):
        self.client.loop_stop()
        self.client.disconnect()

    def on_message(self, _client, _userdata, msg):
        answer = json.loads(msg.payload)
        waiting = self.waiting.pop(answer.get("id"), None)
        if waiting is not None:
            waiting.set(answer)

    @task
    def check_pin(self):
        req_id = next(self.next_id)
        body = json.dumps(
            {"id": req_id, "credential": {"type": "pin", "value": random.choice(self.pins)}}
        )
        result = self.waiting[req_id] = AsyncResult()
        t0 = time.perf_counter()
        self.client.publish(self.req_topic, body, qos=0)
        exc = None
        try:
            answer = result.get(timeout=TIMEOUT_S)
            if answer.get("decision") != "granted":
                exc = Exception("not granted: %s" % answer.get("reason", answer.get("decision")))
        except gevent.Timeout:
            self.waiting.pop(req_id, None)
            exc = Exception("no answer within %.1f s" % TIMEOUT_S)
        events.request.fire(
            request_type="MQTT",
            name="auth/req pin",
            response_time=(time.perf_counter() - t0) * 1000.0,
            response_length=0,
            exception=exc,
            context={},
        )
