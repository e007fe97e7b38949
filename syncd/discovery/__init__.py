"""Finding peers: mDNS advertise + browse (``mdns``), the peer table (``peers``), the
advert format (``txt``). DESIGN §7 "mDNS"; the daemon wires :class:`Discovery` to a
:class:`PeerTable` that the sync scheduler reads."""

from syncd.discovery.mdns import Discovery
from syncd.discovery.peers import (
    Backoff,
    PeerAddress,
    PeerEvent,
    PeerGone,
    PeerInfo,
    PeerSeen,
    PeerTable,
    Source,
)
from syncd.discovery.txt import PROTOCOL_VERSION, SERVICE_TYPE, Advert, InvalidAdvertError

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Advert",
    "Backoff",
    "Discovery",
    "InvalidAdvertError",
    "PeerAddress",
    "PeerEvent",
    "PeerGone",
    "PeerInfo",
    "PeerSeen",
    "PeerTable",
    "Source",
]
