"""Fetch ``image_url`` for a request, only from where the operator allows, within bounds.

* ``http`` and ``https`` only; no proxies from the environment, no ``.netrc``.
* Every address a host resolves to must be public (not loopback, private, link-local, the
  cloud metadata address, multicast or reserved) unless ``KOSMOS2_URL_ALLOWLIST`` names it.
  This is checked before connecting (for a clear message) and again on the socket actually
  connected (:class:`_GuardedConnectionMixin`), so a DNS answer that changes in between (DNS
  rebinding) is caught too, and on every redirect hop (at most :data:`MAX_REDIRECTS`).
* Connect and read timeouts, a deadline for the whole fetch (twice the timeout) and a cap on
  the body. (The route bounds how many fetches run at once.)
* Failures are :class:`FetchRefused`, said in our own words (unreachable, refused address,
  HTTP status, too large, too slow); the upstream body is never passed on.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..config import URL_ALLOWLIST_ENV, UrlFetchPolicy

MAX_REDIRECTS = 5
_CHUNK = 64 << 10


class FetchRefused(Exception):
    """``image_url`` was not fetched; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(f"image_url: {message}")
        self.status = status


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


class ImageFetcher:
    """Fetches image bytes by URL under a :class:`~.config.UrlFetchPolicy`. Thread-safe."""

    def __init__(self, policy: UrlFetchPolicy):
        self.policy = policy

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` (after redirects); :class:`FetchRefused` otherwise."""
        if not isinstance(url, str) or not url.strip():
            raise FetchRefused("expected an http or https URL string")
        with requests.Session() as session:
            session.trust_env = False
            adapter = _GuardedAdapter(self)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            return self._fetch(session, url.strip(), time.monotonic() + 2 * self.policy.timeout_s)

    def _fetch(self, session: requests.Session, url: str, deadline: float) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            try:
                response = session.get(
                    url, stream=True, allow_redirects=False, timeout=(self.policy.timeout_s, self.policy.timeout_s)
                )
            except FetchRefused:
                raise
            except requests.Timeout:
                raise FetchRefused(f"{_host(url)} did not answer within {self.policy.timeout_s:g} s") from None
            except requests.RequestException as error:
                raise FetchRefused(f"{_host(url)} could not be reached ({_reason(error)})") from None
            with response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise FetchRefused(f"{_host(url)} answered HTTP {response.status_code}")
                return self._read(response, url, deadline)
        raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")

    def _read(self, response: requests.Response, url: str, deadline: float) -> bytes:
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchRefused(f"the image is {int(declared)} bytes, more than the {limit} allowed", 413)
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise FetchRefused(f"the image is more than the {limit} bytes allowed", 413)
                if time.monotonic() > deadline:
                    raise FetchRefused(f"{_host(url)} sent too slowly (more than {2 * self.policy.timeout_s:g} s)")
        except requests.RequestException as error:
            raise FetchRefused(f"{_host(url)} broke off ({_reason(error)})") from None
        return bytes(body)

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(f"only http and https URLs with a host are fetched, got '{redact_url(url)[:200]}'")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
        except (socket.gaierror, UnicodeError, ValueError) as error:
            raise FetchRefused(f"host '{parts.hostname}' cannot be resolved ({error})") from None
        for address in sorted(addresses):
            self.check_address(address, parts.hostname, port)

    def check_address(self, address: str, host: str, port: int) -> None:
        """:class:`FetchRefused` unless ``address`` (what ``host`` resolved to) may be reached."""
        ip = ipaddress.ip_address(address.split("%")[0])
        ip = ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip
        if _is_public(ip) or self._allowed(ip, host.lower(), port):
            return
        raise FetchRefused(
            f"'{host}' is {ip}, a {_kind(ip)} address; this server fetches only public "
            f"addresses unless the operator lists it in {URL_ALLOWLIST_ENV}",
            400,
        )

    def _allowed(self, ip, host: str, port: int) -> bool:
        for entry in self.policy.allowlist:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
                continue
            except ValueError:
                pass
            if entry in (host, f"{host}:{port}", f"{ip}:{port}"):
                return True
        return False


def _is_public(ip) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _kind(ip) -> str:
    for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return "non-public"


def _host(url: str) -> str:
    return urlsplit(url).hostname or "the host"


def _reason(error: Exception) -> str:
    """A short reason without the upstream's text: the exception's class and errno-like tail."""
    text = str(error)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "Connection reset",
        "certificate verify failed",
        "No route to host",
    ):
        if marker in text:
            return marker.lower()
    return type(error).__name__


class _GuardedConnectionMixin:
    """Checks the address a new socket is actually connected to (after DNS, on every hop)."""

    fetcher: ImageFetcher

    def _new_conn(self):
        sock = super()._new_conn()
        try:
            self.fetcher.check_address(sock.getpeername()[0], self.host, self.port)
        except FetchRefused:
            sock.close()
            raise
        return sock


def _adapter_classes(fetcher: ImageFetcher) -> dict:
    http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), {"fetcher": fetcher})
    https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), {"fetcher": fetcher})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }


class _GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connection pools check every connected address."""

    def __init__(self, fetcher: ImageFetcher):
        self._pools = _adapter_classes(fetcher)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools
