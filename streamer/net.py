"""Network addresses, for the server (it binds loopback unless a token guards it) and the
Ray engine (a loopback cluster stays on loopback)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 without brackets) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ip_address(host: str) -> bool:
    """Whether `host` is an IP address literal (IPv6 without brackets), not a name."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
