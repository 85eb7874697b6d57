"""Build and publish heartbeats the way upstream agents do, for tests and benchmarks."""
from __future__ import annotations

import json
import time
import uuid as uuidlib
from typing import Any, Dict, Optional

import pika


def upstream_heartbeat(public_ip: str, load: float = 100.0, port_key: str = "squid_port", port: int = 3128,
                       hostname: Optional[str] = None, uuid: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """A heartbeat shaped exactly like the 2014-2024 shoal-agent's."""
    data: Dict[str, Any] = {
        "uuid": uuid or uuidlib.uuid1().hex,
        "hostname": hostname or f"squid-{public_ip.replace('.', '-').replace(':', '-')}.example.org",
        port_key: port,
        "public_ip": public_ip,
        "private_ip": "10.0.0.5",
        "load": load,
        "timestamp": time.time(),
    }
    data.update(extra)
    return data


class Publisher:
    """A blocking pika publisher on the given exchange (declared as Shoal declares it)."""

    def __init__(self, exchange: str, host: str = "127.0.0.1", port: int = 5672,
                 params: Optional[pika.ConnectionParameters] = None) -> None:
        self.exchange = exchange
        self.connection = pika.BlockingConnection(params or pika.ConnectionParameters(host, port))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False)

    def send(self, body: Any, routing_key: str = "info", **props: Any) -> None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        props.setdefault("content_type", "application/json")
        self.channel.basic_publish(self.exchange, routing_key, body, pika.BasicProperties(**props))

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
