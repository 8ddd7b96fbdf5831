"""Fetch ``image_url`` for a request, only from where the operator allows, within bounds.

* ``http`` and ``https`` only; no proxies from the environment, no ``.netrc``.
* Every address a host resolves to must be public (not loopback, private, link-local, the
  cloud metadata address, multicast or reserved) unless ``KOSMOS2_URL_ALLOWLIST`` names it.
  This is checked before connecting (for a clear message) and again on the socket actually
  connected (:class:`_GuardedConnectionMixin`), so a DNS answer that changes in between (DNS
  rebinding) is caught too, and on every redirect hop (at most :data:`MAX_REDIRECTS`).
  IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo) are judged by that
  address too.
* One deadline for the whole fetch (``KOSMOS2_URL_TIMEOUT_S``: connecting, redirects, every
  read), enforced by a watchdog that shuts the fetch's sockets at the deadline, however slowly
  the bytes trickle in; and a cap on the body. (The route bounds how many fetches run at once.)
* Failures are :class:`FetchRefused`, said in our own words (unreachable, refused address,
  HTTP status, too large, too slow); the upstream body is never passed on, and a refused
  address is not said (nor what a name resolves to).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
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


class _Deadline:
    """The sockets of one fetch, shut down (waking any blocked read) when its time is up."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.passed = False
        self._sockets: list[socket.socket] = []
        self.guard = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self.guard:
            self._sockets.append(sock.dup())  # the same connection, kept past an SSL wrap
            if self.passed:
                self._shut_all()

    def _expire(self) -> None:
        with self.guard:
            self.passed = True
            self._shut_all()

    def _shut_all(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self.guard:
            for sock in self._sockets:
                sock.close()


_current = threading.local()  # the deadline of the fetch this thread runs


class ImageFetcher:
    """Fetches image bytes by URL under a :class:`~.config.UrlFetchPolicy`. Thread-safe."""

    def __init__(self, policy: UrlFetchPolicy):
        self.policy = policy

    def fetch(self, url: str) -> bytes:
        """The body of ``url`` (after redirects) within the policy's deadline;
        :class:`FetchRefused` otherwise."""
        if not isinstance(url, str) or not url.strip():
            raise FetchRefused("expected an http or https URL string")
        with requests.Session() as session, _Deadline(self.policy.timeout_s) as deadline:
            session.trust_env = False
            adapter = _GuardedAdapter(self)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _current.deadline = deadline
            try:
                return self._fetch(session, url.strip(), deadline)
            except FetchRefused:
                if deadline.passed:
                    raise self._too_slow(url) from None
                raise
            finally:
                _current.deadline = None

    def _too_slow(self, url: str) -> FetchRefused:
        return FetchRefused(
            f"{_host(url)} did not send the image within {self.policy.timeout_s:g} s (KOSMOS2_URL_TIMEOUT_S)"
        )

    def _fetch(self, session: requests.Session, url: str, deadline: _Deadline) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            left = deadline.at - time.monotonic()
            if left <= 0:
                raise self._too_slow(url)
            try:
                response = session.get(url, stream=True, allow_redirects=False, timeout=(left, left))
            except FetchRefused:
                raise
            except requests.Timeout:
                raise self._too_slow(url) from None
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

    def _read(self, response: requests.Response, url: str, deadline: _Deadline) -> bytes:
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
        except (requests.RequestException, OSError) as error:
            if deadline.passed:
                raise self._too_slow(url) from None
            raise FetchRefused(f"{_host(url)} broke off ({_reason(error)})") from None
        if deadline.passed:  # shut down mid-read: what came is not the whole image
            raise self._too_slow(url)
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
        if all(map(_is_public, _meanings(ip))) or self._allowed(ip, host.lower(), port):
            return
        raise FetchRefused(
            f"'{host}' is not a public address; this server fetches only public addresses "
            f"unless the operator lists it in {URL_ALLOWLIST_ENV}",
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


NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _meanings(ip) -> list:
    """``ip`` and every IPv4 address it carries (IPv4-mapped, 6to4, NAT64, Teredo): a connection
    to it may reach any of them."""
    found = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            found.append(ip.ipv4_mapped)
        if ip.sixtofour:
            found.append(ip.sixtofour)
        if ip.teredo:
            found.extend(ip.teredo)
        if ip in NAT64 or ip in NAT64_LOCAL:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _is_public(ip) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


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
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(sock)
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
