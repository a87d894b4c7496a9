"""Egress allow and deny lists as settings: the rules an operator writes, parsed and checked.

The policy that applies them to outbound connections is `actions.egress`; the rules live here
so configuration stays a leaf that imports nothing from the project.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "HOOKYARD_EGRESS_ALLOW"


class EgressAllowError(ValueError):
    """An `HOOKYARD_EGRESS_ALLOW` entry cannot be read; the message names the entry."""


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One `HOOKYARD_EGRESS_ALLOW` entry: a network or a hostname, on one port or any."""

    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        target = str(self.network) if self.network is not None else str(self.host)
        if self.port is None:
            return target
        return f"[{target}]:{self.port}" if ":" in target else f"{target}:{self.port}"


def parse_allow(value: str, setting: str = SETTING) -> tuple[AllowRule, ...]:
    """Parse a comma-separated allow (or deny) list; raises `EgressAllowError` naming a bad entry."""
    return tuple(_parse_entry(entry, setting) for entry in (part.strip() for part in value.split(",")) if entry)


def _parse_entry(entry: str, setting: str) -> AllowRule:
    def bad(why: str) -> EgressAllowError:
        return EgressAllowError(f"{setting}: entry {entry!r} {why}")

    target, port_text = entry, ""
    if entry.startswith("["):
        inner, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("is not '[ipv6]' or '[ipv6]:port'")
        target, port_text = inner, rest[1:]
        if not port_text and rest:
            raise bad("has an empty port")
    elif entry.count(":") == 1:
        target, _, port_text = entry.partition(":")
        if not port_text:
            raise bad("has an empty port")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise bad("has a port that is not 1-65535")
        port = int(port_text)
    try:
        return AllowRule(network=ipaddress.ip_network(target, strict=False), port=port)
    except ValueError:
        pass
    host = target.lower().rstrip(".")
    labels = host.split(".")
    if not host or not all(0 < len(label) < 64 and label.replace("-", "").isalnum() for label in labels):
        raise bad("is not a CIDR, an address or a hostname")
    if all(label.isdigit() for label in labels) or host.startswith("0x"):
        raise bad("is not a CIDR, an address or a hostname")
    if not host.isascii():
        raise bad("is not a CIDR, an address or a hostname (write IDN names in punycode)")
    return AllowRule(host=host, port=port)
