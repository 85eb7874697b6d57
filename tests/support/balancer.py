"""HAProxy in front of shoal-servers, from the shipped example config (shoal-server/conf/haproxy-shoal.cfg)."""
from __future__ import annotations

import os
import re
import subprocess
from typing import Optional, Sequence

from .procs import stop_process
from .rabbitnode import free_port, wait_port
from .tools import require

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shoal-server", "conf", "haproxy-shoal.cfg")


def render(ports: Sequence[int], listen: int, check_inter: str = "1s") -> str:
    """The shipped config with loopback addresses, the test's ports and a faster check interval."""
    with open(EXAMPLE) as handle:
        text = handle.read()
    text = text.replace("bind :80", f"bind 127.0.0.1:{listen}")
    lines = [line for line in text.splitlines() if not re.match(r"\s+server \w+ ", line)]
    servers = [f"    server s{i} 127.0.0.1:{port} check inter {check_inter} fall 3 rise 2"
               for i, port in enumerate(ports)]
    return "\n".join(lines).rstrip() + "\n" + "\n".join(servers) + "\n"


class Balancer:
    def __init__(self, workdir: str, ports: Sequence[int]) -> None:
        self.port = free_port()
        os.makedirs(workdir, exist_ok=True)
        self.config = os.path.join(workdir, "haproxy.cfg")
        with open(self.config, "w") as handle:
            handle.write(render(ports, self.port))
        self.proc: Optional[subprocess.Popen] = None
        self.log = os.path.join(workdir, "haproxy.out")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Balancer":
        binary = require("haproxy", detail="apt-get install haproxy")
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([binary, "-db", "-f", self.config], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        wait_port(self.port, timeout=15, proc=self.proc)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)
