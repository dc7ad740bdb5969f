"""What a server is configured with: one frozen value the app factory reads, nothing global.

The defaults are the safe ones: loopback only, a 32 MiB upload limit, ``infer``'s pixel
limit, 30 s to send a request, a queue of 32 requests in front of the IR.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from toolkit.matting.images import DEFAULT_MAX_PIXELS
from toolkit.matting.runtime import InferencePrecision, PerformanceMode

#: The environment variable holding the bearer token (preferred to ``--token``, which other
#: users of the machine can read in the process list).
TOKEN_ENV = "MODNET_TOOLS_TOKEN"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Everything :func:`toolkit.serve.app.create_app` needs.

    ``performance`` is OpenVINO's hint. ``latency`` (the default) compiles the IR exactly as
    ``infer`` does for one image, so ``/v1/matte`` answers with the bytes ``infer`` writes;
    ``throughput`` runs parallel streams (more images per second under load, mattes that differ
    from ``infer``'s single-image run by rounding, as ``infer``'s batch runs do).
    ``network_size`` (H, W) runs the network at that size instead of the IR's (as ``infer
    --network-size``). ``requests`` is the size of the IR's asynchronous pool (0: OpenVINO's optimum, at least 2).
    ``max_queue`` bounds the requests admitted at once (reading, waiting, running, encoding);
    one more is answered 503 with ``Retry-After`` without waiting.
    """

    xml: Path
    model_name: str = ""
    device: str = "CPU"
    inference_precision: InferencePrecision = "f32"
    performance: PerformanceMode = "latency"
    requests: int = 0
    network_size: tuple[int, int] | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_queue: int = 32
    request_timeout: float = 30.0
    ws_idle_timeout: float = 60.0
    png_compression: int = 1
    workers: int = 4

    @property
    def name(self) -> str:
        """The model's name in ``/v2/models/<name>``: the OMZ name, which is the IR's stem."""
        return self.model_name or self.xml.stem


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is one only this machine reaches (127.0.0.0/8,
    ::1, IPv4-mapped 127.x; ``127.1``, ``localhost.`` and the like resolve to those)."""
    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}

    def loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        mapped = getattr(address, "ipv4_mapped", None)
        return address.is_loopback or (mapped is not None and mapped.is_loopback)

    return bool(addresses) and all(loopback(a) for a in addresses)
