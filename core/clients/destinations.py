"""Where a sales webhook may point: the guard against server-side request forgery (SSRF).

A business's webhook URL is typed by whoever edits that business, and our workers POST
to it from inside our network. Without a guard it could name the cloud's metadata
service (credentials at 169.254.169.254), the database, Redis or an admin page on
localhost. So:

- the URL must be https, unless SALES_WEBHOOK_ALLOW_HTTP (for development);
- it must carry no credentials (user:password@) when a business is saved: they would
  end up in logs and pages. (A URL stored before this rule still works: its userinfo is
  sent as HTTP Basic auth, and nothing prints more of it than its origin.)
- every address its host resolves to must be a public one: not loopback, private,
  link-local, shared (CGNAT), multicast, reserved, unspecified or a known cloud metadata
  address, unless the host name, the address or a network containing it is listed in
  SALES_WEBHOOK_ALLOWED_HOSTS (the demo and the tests list 127.0.0.1 and localhost).

`resolve` returns the address that was checked, and the client connects to exactly that
address (core.clients.http pins it), so the host cannot resolve to something else
between the check and the connect (DNS rebinding).

The checks on the URL's text (`url_problem`) also run when a business is saved, for a
clear message in the admin; the resolution runs on every call, since DNS can change.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from config.redaction import origin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services. Most are link-local or private anyway; listed so the
# refusal says what they are, and so an allow-list entry for a whole private network
# never lets them through.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)


class DestinationRefused(Exception):
    """The URL may not be called. Its message names the origin (scheme://host:port) only."""


def url_problem(url: str, *, allow_credentials: bool = False) -> str | None:
    """What is wrong with the URL's text (scheme, credentials, host), or None.
    Never repeats the URL itself: it may hold the very secrets it is refused for."""
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http"):
        return "must be an https URL"
    if parts.scheme == "http" and not getattr(settings, "SALES_WEBHOOK_ALLOW_HTTP", False):
        return "must be https (plain http is allowed only with SALES_WEBHOOK_ALLOW_HTTP, for development)"
    if not allow_credentials and (parts.username is not None or "@" in parts.netloc):
        return (
            "must not carry credentials (user:password@); sign requests with the webhook secret, "
            "or put a token the receiver checks in the path"
        )
    if not host:
        return "has no host"
    literal = _ip(host)
    if literal is not None and not allowed(host, literal):
        reason = forbidden(literal)
        if reason:
            return f"names {reason} ({literal}), which is not in SALES_WEBHOOK_ALLOWED_HOSTS"
    if (host in ("localhost", "localhost.localdomain") or host.endswith(".localhost")) and not allowed(host, None):
        return "names localhost, which is not in SALES_WEBHOOK_ALLOWED_HOSTS"
    return None


def resolve(url: str) -> str:
    """The address to connect to for url, after checking every address its host resolves to.

    Raises DestinationRefused for a URL that may not be called, socket.gaierror when the
    host cannot be resolved (maybe passing: the caller decides).
    """
    problem = url_problem(url, allow_credentials=True)
    where = origin(url)
    if problem:
        raise DestinationRefused(f"sales webhook URL {where} {problem}")
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not allowed(host, address):
            reason = forbidden(address)
            if reason:
                raise DestinationRefused(
                    f"sales webhook URL {where} resolves to {address}, {reason}; "
                    f"list the host in SALES_WEBHOOK_ALLOWED_HOSTS to allow it"
                )
        addresses.append(str(sockaddr[0]))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return addresses[0]


def forbidden(address: IPAddress) -> str | None:
    """Why the address is not a public one, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if mapped is not None:
            return forbidden(mapped) or None
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved or non-public address"
    return None


def allowed(host: str, address: IPAddress | None) -> bool:
    """Whether SALES_WEBHOOK_ALLOWED_HOSTS lists the host name, the address, or a network holding it.
    A metadata address is never allowed by a network entry, only by naming it."""
    entries = getattr(settings, "SALES_WEBHOOK_ALLOWED_HOSTS", ()) or ()
    host = host.lower().rstrip(".")
    for entry in entries:
        entry = entry.strip().lower().rstrip(".").strip("[]")
        if not entry:
            continue
        if entry == host:
            return True
        if address is None:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if address in network and (network.num_addresses == 1 or address not in METADATA_ADDRESSES):
            return True
    return False


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
