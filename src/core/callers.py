"""Who calls onshi: the four roles, and how a caller without a certificate
declares one. Servers check these (onshi.server.auth); clients present them
(onshi.client.connection); certificates carry them (onshi.core.pki)."""

from __future__ import annotations

import ipaddress

ROLES = ("facility", "insurer", "review", "operator")
FACILITY, INSURER, REVIEW, OPERATOR = ROLES

# An --insecure-dev server (loopback only) takes the role a caller declares in
# these metadata keys, with the facility code or insurer numbers it acts for.
ROLE_KEY = "x-onshi-role"
FACILITY_KEY = "x-onshi-facility"
INSURER_KEY = "x-onshi-insurer"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: the only hosts plaintext may reach."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
