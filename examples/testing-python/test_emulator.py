"""A Python test suite that drives the apsaramq-device emulator as a child process.

The emulator is the `apsaramq-device emulator` command: it prints one JSON line when it is ready (its URLs), answers
the real OpenAPI (signed requests) and takes test controls under /_emulator/ on the same port. Nothing here is
specific to our Node code: any language that can start a process, sign an HTTP request and speak MQTT can do this.

Run it with Debian's python3 and python3-paho-mqtt (paho-mqtt 1.6):
    APSARAMQ_DEVICE_CLI="npx apsaramq-device" python3 -m unittest -v test_emulator.py
"""
import base64
import hashlib
import hmac
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import threading
import unittest
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

CLI = shlex.split(os.environ.get("APSARAMQ_DEVICE_CLI", "npx apsaramq-device"))
INSTANCE_ID = "mqtt-py-test"
ACCESS_KEY_ID = "LTAIpython" + secrets.token_hex(4)
ACCESS_KEY_SECRET = secrets.token_urlsafe(24)
WAIT = 10  # seconds


def percent_encode(value):
    return urllib.parse.quote(value, safe="-_.~")


def sign_v1(method, params, secret):
    """Alibaba Cloud RPC signature method V2 (HMAC-SHA1), as the OpenAPI gateway checks it."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def mqtt_password(secret, client_id):
    """The DeviceCredential-mode password: Base64(HMAC-SHA1(key=secret, data=ClientId))."""
    return base64.b64encode(hmac.new(secret.encode(), client_id.encode(), hashlib.sha1).digest()).decode()


def accepts(url):
    parsed = urllib.parse.urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=2).close()
        return True
    except OSError:
        return False


class EmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env = dict(os.environ, ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET=ACCESS_KEY_SECRET)
        env.pop("DEBUG", None)
        args = ["emulator", "--json", "--ephemeral", "--mqtt-port", "0", "--ws-port", "0", "--api-port", "0", "--instance-id", INSTANCE_ID,
                "--parent-topics", "py", "--groups", "GID_py"]
        cls.process = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.process.stdout.readline()  # the ready line
        if not line:
            raise RuntimeError("the emulator exited before it was ready: " + cls.process.stderr.read())
        cls.ready = json.loads(line)

    @classmethod
    def tearDownClass(cls):
        cls.process.send_signal(signal.SIGTERM)
        code = cls.process.wait(WAIT)
        cls.process.stdout.close()
        cls.process.stderr.close()
        assert code == 0, f"the emulator exited with {code}"
        for url in (cls.ready["mqttUrl"], cls.ready["apiEndpoint"]):
            assert not accepts(url), f"{url} still accepts connections after the emulator stopped"

    def call(self, action, **params):
        """A signed OpenAPI call (POST, form body), as Alibaba's SDKs send it."""
        params = dict(params, Action=action, Version="2020-04-20", Format="JSON", AccessKeyId=ACCESS_KEY_ID,
                      SignatureMethod="HMAC-SHA1", SignatureVersion="1.0", SignatureNonce=str(uuid.uuid4()),
                      Timestamp=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        params["Signature"] = sign_v1("POST", params, ACCESS_KEY_SECRET)
        request = urllib.request.Request(self.ready["apiEndpoint"] + "/", data=urllib.parse.urlencode(params).encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return json.load(response)

    def control(self, method, path, body=None):
        """The emulator's own test controls: GET /_emulator/stats, POST /_emulator/disconnect, …"""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.ready["apiEndpoint"] + "/_emulator/" + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return json.load(response)

    def device(self, client_id):
        credential = self.call("RegisterDeviceCredential", ClientId=client_id, InstanceId=INSTANCE_ID)["DeviceCredential"]
        username = f"DeviceCredential|{credential['DeviceAccessKeyId']}|{INSTANCE_ID}"
        return username, mqtt_password(credential["DeviceAccessKeySecret"], client_id)

    def connect(self, client_id, username, password):
        """A paho client (MQTT 3.1.1) and the CONNACK code it got; events instead of sleeps."""
        url = urllib.parse.urlparse(self.ready["mqttUrl"])
        client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311)
        client.username_pw_set(username, password)
        connack = {}
        connected = threading.Event()

        def on_connect(_client, _userdata, _flags, rc):
            connack["rc"] = rc
            connected.set()

        client.on_connect = on_connect
        client.connect(url.hostname, url.port, keepalive=60)
        client.loop_start()
        self.addCleanup(client.loop_stop)
        self.assertTrue(connected.wait(WAIT), "no CONNACK")
        return client, connack["rc"]

    def test_register_connect_exchange_fault_and_refusal(self):
        username, password = self.device("GID_py@@@dev-1")
        client, rc = self.connect("GID_py@@@dev-1", username, password)
        self.assertEqual(rc, 0)

        subscribed, got, dropped, received = threading.Event(), threading.Event(), threading.Event(), []
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = lambda _c, _u, message: (received.append((message.topic, message.payload.decode())), got.set())
        client.subscribe("py/#", qos=1)
        self.assertTrue(subscribed.wait(WAIT), "no SUBACK")
        client.publish("py/hello", "hi from python", qos=1)
        self.assertTrue(got.wait(WAIT), "the message did not come back")
        self.assertEqual(received, [("py/hello", "hi from python")])

        # A fault: the emulator drops the client like a network cut.
        client.on_disconnect = lambda _c, _u, rc: dropped.set()
        self.assertEqual(self.control("POST", "disconnect", {"clientId": "GID_py@@@dev-1"}), {"disconnected": True})
        self.assertTrue(dropped.wait(WAIT), "paho did not see the connection drop")
        client.disconnect()

        stats = self.control("GET", "stats")
        self.assertGreaterEqual(stats["actions"]["RegisterDeviceCredential"]["ok"], 1)

        # A wrong password is refused with CONNACK 4 (bad user name or password).
        refused, rc = self.connect("GID_py@@@dev-1", username, "AAAA" + password[4:])
        self.assertEqual(rc, 4)
        refused.disconnect()


if __name__ == "__main__":
    unittest.main()
