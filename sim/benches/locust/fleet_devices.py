"""Turns a `fleetsim provision` manifest into the device list the Locust
peers read: each device's server id, site id, secret and the PIN texts of
the codes placed on its door (revealed through the server's admin API with
the manifest's owner token).

    python3 fleet_devices.py fleet.json devices.json

The output holds device secrets and PINs: protect it like the manifest.
"""

import itertools
import json
import os
import sys
import urllib.request


class Peers:
    """What both Locust peers read from their environment: the device list
    this script wrote (DEVICES_JSON, default devices.json) and the checks a
    second each user asks (RATE_PER_USER, default 2). `next_device()` hands
    each new user the next device of the list, round robin."""

    def __init__(self):
        with open(os.environ.get("DEVICES_JSON", "devices.json")) as f:
            self.devices = json.load(f)["devices"]
        self.rate_per_user = float(os.environ.get("RATE_PER_USER", "2"))
        self._order = itertools.count()

    def next_device(self):
        return self.devices[next(self._order) % len(self.devices)]


def call(target, token, method, path):
    req = urllib.request.Request(
        target + path,
        method=method,
        headers={"authorization": "Bearer " + token, "content-type": "application/json"},
        data=b"{}" if method == "POST" else None,
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main(manifest_path, out_path):
    with open(manifest_path) as f:
        m = json.load(f)
    target, token, fleet = m["target"].rstrip("/"), m["token"], m["fleet"]
    code_ids = fleet["ids"]["credential"]
    # The server's PIN text of each of the run's codes, per door.
    pins_per_door = {}
    for code, place in fleet["codes"].items():
        revealed = call(target, token, "POST", "/v1/credentials/%d/reveal" % code_ids[code])
        if "pin" not in revealed:
            continue
        for door in place["doors"]:
            pins_per_door.setdefault(str(door), []).append(revealed["pin"])
    devices = []
    for run_id, dev in fleet["devices"].items():
        info = call(target, token, "GET", "/v1/devices/%d" % dev["id"])
        pins = pins_per_door.get(str(fleet["device_doors"][run_id]), [])
        if not pins:
            continue
        devices.append(
            {"device": dev["id"], "site": info["site"], "secret": dev["secret"], "pins": pins}
        )
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"target": target, "broker": m.get("broker"), "devices": devices}, f)
    print("%d devices with PINs written to %s" % (len(devices), out_path))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: fleet_devices.py MANIFEST OUT")
    main(sys.argv[1], sys.argv[2])
