"""What a browser's page may ask of a service (``security.browser``): pure decisions."""

from __future__ import annotations

import pytest

from alluxiojob.security.browser import cross_site_denial, websocket_denial


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:29999",
                                    "", b"http://localhost", "file://"])
def test_any_origin_on_a_websocket_upgrade_is_refused(origin: str | bytes) -> None:
    denial = websocket_denial(origin)
    assert denial is not None
    assert denial.status == 403
    assert "from web pages are refused" in denial.message


def test_an_upgrade_without_origin_goes_on() -> None:
    assert websocket_denial(None) is None


def _decide(origin: str | None = None, site: str | None = None, mode: str | None = None,
            host: str | None = "127.0.0.1:19999", method: str = "GET", path: str = "/api",
            scheme: str = "http") -> int | None:
    denial = cross_site_denial(method=method, path=path, scheme=scheme, host_header=host,
                               origin=origin, fetch_site=site, fetch_mode=mode,
                               navigable=frozenset({"/ui/"}))
    return None if denial is None else denial.status


@pytest.mark.parametrize(("origin", "host", "scheme"), [
    ("http://127.0.0.1:19999", "127.0.0.1:19999", "http"),
    ("HTTP://LOCALHOST:19999", "localhost:19999", "http"),
    ("http://[::1]:19999", "[::1]:19999", "http"),
    ("https://jobs.example.com", "jobs.example.com", "http"),  # behind a TLS proxy
    ("https://jobs.example.com", "jobs.example.com:443", "https"),
    ("http://jobs.example.com", "jobs.example.com", "http"),
])
def test_the_servers_own_origin_goes_on(origin: str, host: str, scheme: str) -> None:
    assert _decide(origin, host=host, scheme=scheme, method="POST") is None


@pytest.mark.parametrize(("origin", "host"), [
    ("http://evil.example", "127.0.0.1:19999"),
    ("http://127.0.0.1:8000", "127.0.0.1:19999"),  # another port of this host
    ("http://127.0.0.1", "127.0.0.1:19999"),
    ("null", "127.0.0.1:19999"),
    ("not a url", "127.0.0.1:19999"),
    ("http://127.0.0.1:99999", "127.0.0.1:99999"),  # not a port
    ("http://127.0.0.1:19999", None),
    ("http://127.0.0.1:19999.evil.example", "127.0.0.1:19999"),
])
def test_other_origins_are_refused(origin: str, host: str | None) -> None:
    assert _decide(origin, host=host, method="POST") == 403


@pytest.mark.parametrize(("site", "refused"), [
    ("cross-site", True), ("same-site", True), ("CROSS-SITE", True), ("whatever", True),
    ("same-origin", False), ("none", False), (None, False),
])
def test_sec_fetch_site(site: str | None, refused: bool) -> None:
    assert (_decide(site=site, mode="cors") == 403) is refused


def test_a_link_from_another_site_opens_a_navigable_page_only() -> None:
    assert _decide(site="cross-site", mode="navigate", path="/ui/") is None
    assert _decide(site="cross-site", mode="navigate", path="/ui/", method="HEAD") is None
    assert _decide(site="cross-site", mode="navigate", path="/api") == 403
    assert _decide(site="cross-site", mode="no-cors", path="/ui/") == 403
    assert _decide(origin="http://evil.example", site="cross-site", mode="navigate",
                   path="/ui/", method="POST") == 403  # a form posted to it


def test_clients_that_are_not_browsers_go_on() -> None:
    assert _decide() is None
    assert _decide(host=None) is None
    assert _decide(method="POST", host="evil.example") is None  # the Host check is apart
