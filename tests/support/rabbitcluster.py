"""A private 3-node RabbitMQ cluster on loopback (127.0.0.1, .2, .3) for the fault tests.

Each node has its own node name, data directory and ports, and all share one Erlang cookie (in
their own HOME). A short ``net_ticktime`` and the partition handling are set so that a paused
node is declared down, and a partition healed, within seconds. Nodes are stopped by PID.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from typing import List, Optional

from .rabbitnode import RabbitNode

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


class RabbitCluster:
    def __init__(self, base_dir: str, partition_handling: str = "autoheal", net_ticktime: int = 4,
                 extra_config: str = "") -> None:
        self.partition_handling = partition_handling
        tag = uuid.uuid4().hex[:6]
        cookie = secrets.token_hex(16).upper()
        config = f"cluster_partition_handling = {partition_handling}\n" + extra_config
        advanced = f"[{{kernel, [{{net_ticktime, {net_ticktime}}}]}}]."
        self.nodes: List[RabbitNode] = [
            RabbitNode(os.path.join(base_dir, f"rel{i + 1}"), config=config, host=host,
                       name=f"shoalrel{i + 1}-{tag}@localhost", advanced=advanced, cookie=cookie)
            for i, host in enumerate(HOSTS)]

    def start(self, timeout: float = 120.0) -> "RabbitCluster":
        errors: List[BaseException] = []

        def boot(node: RabbitNode) -> None:
            try:
                node.start(timeout=timeout)
            except BaseException as err:  # reported below, after every thread ended
                errors.append(err)

        threads = [threading.Thread(target=boot, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.stop()
            raise errors[0]
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        self.wait_running(len(self.nodes))
        return self

    def set_partition_handling(self, mode: str) -> None:
        """Set ``cluster_partition_handling`` on every running node (what rabbitmq.conf sets at boot;
        the node monitor reads it at each decision). A node started later reads its file again."""
        for node in self.nodes:
            node.ctl("eval", f"application:set_env(rabbit, cluster_partition_handling, {mode}).", timeout=30)
        self.partition_handling = mode

    def running(self, via: Optional[RabbitNode] = None) -> List[str]:
        """The running members as ``via`` (default: the first node) sees them."""
        out = (via or self.nodes[0]).ctl("eval", "rabbit_nodes:all_running().", timeout=20)
        return sorted(part.strip(" '[]\n") for part in out.split(",") if part.strip(" '[]\n"))

    def partitions(self, via: RabbitNode) -> str:
        return via.ctl("eval", "rabbit_node_monitor:partitions().", timeout=20).strip()

    def wait_running(self, count: int, timeout: float = 60.0, via: Optional[RabbitNode] = None) -> None:
        deadline = time.monotonic() + timeout
        seen: List[str] = []
        while time.monotonic() < deadline:
            try:
                seen = self.running(via)
                if len(seen) == count:
                    return
            except (RuntimeError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"cluster has {seen} running, not {count} nodes")

    def amqp_servers(self, *order: int) -> str:
        """The ``amqp_servers`` value listing the nodes in ``order`` (0-based)."""
        return ", ".join(f"{self.nodes[i].host}:{self.nodes[i].amqp_port}" for i in order)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.resume()
                except ProcessLookupError:
                    pass
            node.stop()
