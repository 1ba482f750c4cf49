"""An MQTT client written with Eclipse Paho (Debian's python3-paho-mqtt 1.6.1), driven by test/interop/paho.test.ts.

Takes one JSON argument:
  {"host", "port", "version": 5 | 4 | 3, "clientId", "username", "password",
   "keepalive": the CONNECT's Keep Alive (optional, default 60),
   "topic": a topic to subscribe to and then publish one message to (optional),
   "publishOnly": a topic to publish one message to without subscribing (optional),
   "publishAcked": a topic to publish one QoS 1 message of "payloadBytes" bytes to, waiting for its PUBACK (optional)}
and prints one JSON line: {"connack": the CONNACK code, "granted": [...], "received": {topic, payload,
userProperties} | null, "disconnect": the server DISCONNECT's reason code | null, "serverKeepAlive": the MQTT 5
CONNACK's Server Keep Alive | null, "acked": whether the publishAcked message got its PUBACK}. Every wait is
bounded, so a broker that does not answer makes this exit with "timeout" rather than hang the test run.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10.0


def code(value):
    """A CONNACK / SUBACK / DISCONNECT code as a plain int (MQTT 5 gives ReasonCodes objects)."""
    return value.value if hasattr(value, "value") else int(value)


def main():
    args = json.loads(sys.argv[1])
    v5 = args["version"] == 5
    protocol = {5: mqtt.MQTTv5, 4: mqtt.MQTTv311, 3: mqtt.MQTTv31}[args["version"]]
    client = mqtt.Client(client_id=args["clientId"], protocol=protocol)
    client.username_pw_set(args["username"], args["password"])
    result = {"connack": None, "granted": None, "received": None, "disconnect": None, "serverKeepAlive": None, "acked": False}
    connected, subscribed, received, gone, acked = (threading.Event() for _ in range(5))

    def on_connect(_client, _userdata, _flags, rc, properties=None):
        result["connack"] = code(rc)
        result["serverKeepAlive"] = getattr(properties, "ServerKeepAlive", None) if v5 else None
        connected.set()

    def on_publish(_client, _userdata, _mid):
        acked.set()

    def on_subscribe(_client, _userdata, _mid, granted, _properties=None):
        result["granted"] = [code(g) for g in granted]
        subscribed.set()

    def on_message(_client, _userdata, message):
        props = getattr(message.properties, "UserProperty", None) if v5 else None
        result["received"] = {"topic": message.topic, "payload": message.payload.decode(), "userProperties": props}
        received.set()

    def on_disconnect(_client, _userdata, rc, _properties=None):
        if v5 and code(rc) != 0:
            result["disconnect"] = code(rc)
        gone.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    keepalive = args.get("keepalive", 60)
    if v5:
        client.connect(args["host"], args["port"], keepalive=keepalive, clean_start=True)
    else:
        client.connect(args["host"], args["port"], keepalive=keepalive)
    client.loop_start()
    try:
        if not connected.wait(WAIT):
            result["error"] = "timeout waiting for CONNACK"
            return result
        if result["connack"] != 0:
            return result
        properties = None
        if v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = ("origin", "paho")
        if args.get("topic"):
            client.subscribe(args["topic"], qos=1)
            if not subscribed.wait(WAIT):
                result["error"] = "timeout waiting for SUBACK"
                return result
            client.publish(args["topic"], "from paho", qos=1, properties=properties)
            if not received.wait(WAIT):
                result["error"] = "timeout waiting for the message"
        if args.get("publishAcked"):
            client.publish(args["publishAcked"], b"x" * args["payloadBytes"], qos=1, properties=properties)
            result["acked"] = acked.wait(WAIT)
        if args.get("publishOnly"):
            client.publish(args["publishOnly"], "from paho", qos=1, properties=properties)
            if not gone.wait(WAIT):
                result["error"] = "timeout waiting for the broker to disconnect"
        return result
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    print(json.dumps(main()))
