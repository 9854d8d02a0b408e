"""A link with latency and loss where the kernel has no ``sch_netem`` (``tc qdisc ... netem``
answers "Specified qdisc kind is unknown"): Ethernet frames relayed in user space.

``relay A B --delay-ms D --loss P`` forwards every frame arriving on interface A out of B and
back, each one D ms later, dropping each with probability P, both ways: A and B are two veths
in the switch namespace, one to the host, one into the bridge. On SIGTERM it prints what it did
(``forwarded N dropped N failed N``) and exits.

Raw frames must carry finished checksums, not the partial ones a veth hands over when its
sender offloads them: ``no-tx-checksum IFACE...`` turns that offload off (which also turns off
TSO, so frames also come at most one MTU long), run in each sending host's namespace.
"""

from __future__ import annotations

import argparse
import array
import fcntl
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from types import FrameType

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4  # a frame this host sent: our own, seen again on the way out
_SIOCETHTOOL = 0x8946
_ETHTOOL_STXCSUM = 0x17


def no_tx_checksum(interface: str) -> None:
    value = array.array("I", [_ETHTOOL_STXCSUM, 0])  # struct ethtool_value {cmd, data}
    request = struct.pack("16sP16x", interface.encode(), value.buffer_info()[0])  # struct ifreq
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, _SIOCETHTOOL, request)


def relay(first: str, second: str, delay_s: float, loss: float) -> str:
    sockets = []
    for interface in (first, second):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        sock.bind((interface, 0))
        sock.setblocking(False)
        sockets.append(sock)
    other = {sockets[0]: sockets[1], sockets[1]: sockets[0]}
    print(f"relaying {first} <-> {second}", flush=True)  # the caller waits for this line
    # One delay for every frame: the order they came in is the order they are due.
    pending: deque[tuple[float, socket.socket, bytes]] = deque()
    forwarded = dropped = failed = 0
    running = True

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 0.2
        ready, _, _ = select.select(sockets, [], [], timeout)
        now = time.monotonic()
        for sock in ready:
            while True:
                try:
                    frame, address = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if address[2] == _PACKET_OUTGOING:
                    continue
                if random.random() < loss:
                    dropped += 1
                else:
                    pending.append((now + delay_s, other[sock], frame))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, out, frame = pending.popleft()
            try:
                out.send(frame)
                forwarded += 1
            except OSError:  # e.g. ENOBUFS: lost, as on a congested wire
                failed += 1
    return f"forwarded {forwarded} dropped {dropped} failed {failed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    offload = commands.add_parser("no-tx-checksum", help="turn TX checksum offload off")
    offload.add_argument("interfaces", nargs="+")
    link = commands.add_parser("relay", help="relay frames between two interfaces")
    link.add_argument("first")
    link.add_argument("second")
    link.add_argument("--delay-ms", type=float, default=20.0, help="each way (default 20)")
    link.add_argument("--loss", type=float, default=0.02, help="each way (default 0.02)")
    args = parser.parse_args(argv)
    if args.command == "no-tx-checksum":
        for interface in args.interfaces:
            no_tx_checksum(interface)
        return 0
    print(relay(args.first, args.second, args.delay_ms / 1000, args.loss), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
