"""Outbound HTTP for `http_request` steps, guarded against server-side request forgery.

A tenant's workflow must not reach the platform's own network: loopback, private, link-local
(cloud metadata at 169.254.169.254 included), carrier-grade NAT, multicast and reserved addresses
are refused unless the NECTAR_OUTBOUND_ALLOWLIST setting names them, and so is an IPv6 address that
carries one of those IPv4 addresses (6to4, Teredo, NAT64, IPv4-mapped). Every address a host name
resolves to is checked and the connection goes to the address that was checked (a DNS answer that
changes between the check and the connection, DNS rebinding, cannot redirect it), while the Host
header and TLS certificate check still use the name. Redirects are not followed, and responses are
cut at a size cap.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NewConnectionError
from urllib3.util import connection as urllib3_connection
from urllib3.util import parse_url

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024
_EXTRA_BLOCKED = [
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fd00:ec2::/32"),
    # Local-use NAT64 (RFC 8215): where it puts the IPv4 address depends on the prefix length its
    # operator chose (/48 to /96), so the address it leads to cannot be known; refused whole.
    ipaddress.ip_network("64:ff9b:1::/48"),
]
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class OutboundRefused(Exception):
    """The request was not sent (or was cut off) for safety; the message says why."""


class OutboundUnavailable(OutboundRefused):
    """Not sent, or no answer, for a reason that may pass (the host does not resolve or cannot be
    reached, or did not answer in time), unlike the other refusals."""


@dataclass(frozen=True)
class OutboundPolicy:
    allowlist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_timeout: float = 30.0
    ca_bundle: str | None = None  # CA certificates to trust instead of the bundled ones

    @classmethod
    def from_setting(cls, raw: str | None, ca_bundle: str | None = None) -> OutboundPolicy:
        networks = []
        for item in (raw or "").split(","):
            if item.strip():
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
        return cls(allowlist=tuple(networks), ca_bundle=ca_bundle)

    def allows(self, address: str) -> bool:
        return self.refused_part(address) is None

    def refused_part(self, address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """What makes `address` refused: an IPv4 address it carries (an IPv6 address may route to
        one, see _carried_ipv4), judged by the same rules, or itself; None if it is allowed."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if any(ip in network for network in self.allowlist):
            return None
        return next((part for part in (*_carried_ipv4(ip), ip) if _internal(part)), None)


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in network for network in _EXTRA_BLOCKED)
    )


def _carried_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped, 6to4, Teredo (server and client),
    NAT64's well-known prefix, IPv4-compatible."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    carried = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [address for address in carried if address is not None]


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: object

    def as_dict(self) -> dict:
        return {"status": self.status, "headers": self.headers, "body": self.body}


def check_url(url: str, policy: OutboundPolicy) -> str:
    """Refuses a URL that may not be called; returns the checked address to connect to. A refusal
    never quotes the URL: it may hold a credential (a Slack webhook's URL is one), and a connection
    test, outside any run, masks nothing."""
    # Parsed as urllib3 (and so requests) parses it, so the host checked is the host connected to;
    # userinfo and backslashes are refused outright, since URL parsers disagree about them.
    if "\\" in url or any(ord(c) < 33 for c in url):
        raise OutboundRefused("the URL has a backslash, a space or a control character; refused")
    try:
        parts = parse_url(url)
    except LocationParseError:
        raise OutboundRefused(
            "not a URL: it could not be parsed (check its host and port); refused"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise OutboundRefused("only http and https URLs with a host can be called; refused")
    if parts.auth:
        raise OutboundRefused("URLs with a user name or password in them are refused; use a connection")
    host = parts.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise OutboundUnavailable(f"the host {host!r} does not resolve") from None
    for info in infos:
        address = info[4][0]
        refused = policy.refused_part(address)
        if refused is not None:
            carried = f" (it carries {refused})" if refused.version == 4 and ":" in address else ""
            raise OutboundRefused(
                f"{host} resolves to {address}, a private or internal address{carried}; refused"
            )
    return infos[0][4][0]


def send(
    method: str,
    url: str,
    *,
    policy: OutboundPolicy,
    headers: dict[str, str] | None = None,
    params: dict | None = None,
    body: object = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> HttpResult:
    address = check_url(url, policy)
    limit = min(timeout, policy.max_timeout)
    kwargs: dict = {"headers": headers or {}, "params": params}
    if body is not None:
        if isinstance(body, dict | list):
            kwargs["json"] = body
        else:
            kwargs["data"] = str(body).encode()
    adapter = _PinnedAdapter(address, limit)
    try:
        with requests.Session() as http:
            # No proxy from the environment (it would resolve the host itself, past the check and
            # the pinned address) and no ~/.netrc (its logins would go to any host a tenant names);
            # the CA bundle is the policy's (REQUESTS_CA_BUNDLE, read with the other settings).
            http.trust_env = False
            http.verify = policy.ca_bundle or True
            http.mount("http://", adapter)
            http.mount("https://", adapter)
            response = http.request(method, url, allow_redirects=False, stream=True, timeout=limit, **kwargs)
            with response:
                _check_peer(response, policy)
                content = _read_capped(response, policy.max_response_bytes)
            if adapter.cut_off:  # the body may look complete but was cut at the deadline
                raise requests.Timeout
            return HttpResult(response.status_code, dict(response.headers), _decode(content, response))
    except requests.RequestException as error:
        if isinstance(error, requests.Timeout) or adapter.cut_off:
            raise OutboundUnavailable(
                f"no complete answer from {urlsplit(url).hostname} within {limit:g} s"
            ) from None
        raise OutboundUnavailable(
            f"could not reach {urlsplit(url).hostname}: {type(error).__name__}"
        ) from None


class _PinnedAdapter(HTTPAdapter):
    """Connects every request of one call to `address`, the one check_url approved, and cuts the
    connection when the call's whole time is up (requests' timeout bounds each read, so a server
    dripping one byte at a time could otherwise hold a worker for ever)."""

    def __init__(self, address: str, total_seconds: float):
        self._address, self._total_seconds = address, total_seconds
        self._watchdogs: list[threading.Timer] = []
        self.cut_off = False
        super().__init__(max_retries=0)

    def cut(self, sock: socket.socket) -> None:
        self.cut_off = True
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read, which then fails or ends
        except OSError:
            pass

    def close(self):
        for watchdog in self._watchdogs:
            watchdog.cancel()
        super().close()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        address, adapter = self._address, self

        class Connection(_PinnedConnection, HTTPConnection):
            pinned_address, owner = address, adapter

        class SecureConnection(_PinnedConnection, HTTPSConnection):
            pinned_address, owner = address, adapter

        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PinnedPool", (HTTPConnectionPool,), {"ConnectionCls": Connection}),
            "https": type("PinnedSecurePool", (HTTPSConnectionPool,), {"ConnectionCls": SecureConnection}),
        }


class _PinnedConnection:
    """urllib3's connection, with the socket opened to a fixed address instead of a fresh lookup."""

    pinned_address: str
    owner: _PinnedAdapter

    def _new_conn(self):
        try:
            sock = urllib3_connection.create_connection(
                (self.pinned_address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"failed to connect: {error}") from error
        watchdog = threading.Timer(self.owner._total_seconds, self.owner.cut, (sock,))  # noqa: SLF001
        watchdog.daemon = True
        watchdog.start()
        self.owner._watchdogs.append(watchdog)  # noqa: SLF001
        return sock


def _check_peer(response: requests.Response, policy: OutboundPolicy) -> None:
    try:
        peer = response.raw._connection.sock.getpeername()[0]  # noqa: SLF001 - urllib3 keeps no public handle
    except AttributeError:
        return
    if not policy.allows(peer):
        raise OutboundRefused(f"the connection went to {peer}, a private or internal address; refused")


def _read_capped(response: requests.Response, cap: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise OutboundRefused(f"the response is larger than {cap} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(content: bytes, response: requests.Response) -> object:
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return json.loads(content)
        except (ValueError, RecursionError):  # nested past the parser's depth: the text, as for bad JSON
            pass
    try:
        return content.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name from the server
        return content.decode("utf-8", errors="replace")
