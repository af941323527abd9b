"""The run's names answered without DNS (routing/resolve.py): which names (pure, with properties), and the
getaddrinfo that answers them, checked against the real libc getaddrinfo it delegates to."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from pytest_emperor.routing.nginx_site import load_site
from pytest_emperor.routing.resolve import LoopbackNames, RoutedNames, addresses_for, install, open_hint
from pytest_emperor.routing.routes import RouteMap

SEED = Path(__file__).parent / "sites" / "seed.conf"
SITE_NAMES = RoutedNames.of(load_site(SEED).route_map)  # ~^(?<app>[^.]+)\.api\.mycompany\.com$
DEFAULT_NAMES = RoutedNames.of(RouteMap.for_domain())  # <app>.api.localhost

label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
case = st.sampled_from([str.lower, str.upper, str.title])


def test_the_seed_site_answers_its_domain_and_localhost_names_only() -> None:
    assert SITE_NAMES.domains == ("api.mycompany.com",)
    for name in ("shop.api.mycompany.com", "SHOP.Api.MyCompany.com.", b"shop.api.mycompany.com", "api.mycompany.com",
                 "a.b.api.mycompany.com", "x.api.localhost", "anything.localhost"):
        assert SITE_NAMES.answers(name), name
    for name in ("mycompany.com", "www.mycompany.com", "shop.api.mycompany.com.evil.org", "xapi.mycompany.com",
                 "localhost", "example.org", "127.0.0.1", "::1", "fe80::1%eth0", "", None, 80, b"\xff.localhost",
                 "é.localhost"):
        assert not SITE_NAMES.answers(name), name


def test_a_site_files_other_server_blocks_add_their_names(tmp_path: Path) -> None:
    site = tmp_path / "api.conf"
    site.write_text(SEED.read_text() + """
server {
    listen 80;
    server_name status.mycompany.com .internal.mycompany.com *.cdn.mycompany.com _ "" www.mycompany.* ~^x$;
    return 204;
}
server {
    server_name admin.localhost;
    return 204;
}
""")
    names = RoutedNames.of(load_site(site).route_map, load_site(site))
    assert names.hosts == {"status.mycompany.com"}
    assert names.domains == ("api.mycompany.com", "internal.mycompany.com", "*.cdn.mycompany.com")
    for name in ("status.mycompany.com", "internal.mycompany.com", "a.internal.mycompany.com", "a.cdn.mycompany.com",
                 "admin.localhost", "shop.api.mycompany.com"):
        assert names.answers(name), name
    for name in ("cdn.mycompany.com", "a.status.mycompany.com", "www.mycompany.com", "x", "mycompany.com"):
        assert not names.answers(name), name


def test_a_domain_under_localhost_adds_nothing_and_a_regex_without_a_literal_domain_still_answers() -> None:
    assert DEFAULT_NAMES.domains == ()
    assert DEFAULT_NAMES.answers("svc-ab12.api.localhost")
    assert not DEFAULT_NAMES.answers("svc.api.example.com")
    # The Host here is derived from no literal domain: the regex alone says which names are routed.
    names = RoutedNames.of(RouteMap(r"~^(?<app>[a-z]+)-(?<env>dev|qa)\.svc$", "/tmp/$app-$env.sock", "$app-dev.svc"))
    assert names.domains == ()
    assert names.answers("shop-qa.svc") and names.answers("shop-dev.svc")
    assert not names.answers("shop-prod.svc") and not names.answers("svc")
    assert RoutedNames.of(None).answers("a.localhost") and not RoutedNames.of(None).answers("a.svc")


@given(label, label, case)
def test_every_name_under_the_site_domain_is_answered(app: str, sub: str, spelling: object) -> None:
    for name in (f"{app}.api.mycompany.com", f"{sub}.{app}.api.mycompany.com", f"{app}.api.mycompany.com."):
        assert SITE_NAMES.answers(spelling(name)), name  # type: ignore[operator]


@given(st.lists(label, min_size=1, max_size=4), st.sampled_from(["com", "org", "mycompany.com", "localhost.org"]))
def test_a_name_outside_the_run_is_never_answered(labels: list[str], top: str) -> None:
    name = ".".join([*labels, top])
    assert not SITE_NAMES.answers(name)
    assert not DEFAULT_NAMES.answers(name)


@given(label, case)
def test_every_localhost_name_is_answered_whatever_the_domain(app: str, spelling: object) -> None:
    for names in (SITE_NAMES, DEFAULT_NAMES):
        assert names.answers(spelling(f"{app}.api.localhost")), app  # type: ignore[operator]
        assert names.answers(f"{app}.localhost".encode())


@given(st.ip_addresses())
def test_an_address_is_never_a_name(address: object) -> None:
    assert not SITE_NAMES.answers(str(address))


def test_addresses_follow_where_the_router_listens() -> None:
    assert addresses_for("127.0.0.1") == ("127.0.0.1",)
    assert addresses_for("0.0.0.0") == ("127.0.0.1",)
    assert addresses_for("::1") == addresses_for("[::1]") == ("::1",)
    assert addresses_for("::") == ("::1", "127.0.0.1")


def test_the_open_hint_is_given_for_production_names_only() -> None:
    assert open_hint(RouteMap.for_domain(), 8080) is None  # curl and browsers resolve *.localhost themselves
    site = load_site(SEED).route_map
    assert "curl --resolve '*:8080:127.0.0.1' URL" in (open_hint(site, 8080) or "")
    assert "--host-resolver-rules='MAP *.api.mycompany.com [::1]'" in (open_hint(site, 8080, "::") or "")
    regex_only = RouteMap(r"~^(?<app>[a-z]+)-(?<env>dev|qa)\.svc$", "/tmp/$app-$env.sock", "$app-dev.svc")
    assert "MAP * 127.0.0.1" in (open_hint(regex_only, 80) or "")


def libc(host: str, *args: object) -> list[tuple[object, ...]]:
    """What the real getaddrinfo, not any wrapper, gives for ``host``."""
    return list(socket._socket.getaddrinfo(host, *args))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "args",
    [
        (80,),
        ("http", socket.AF_INET, socket.SOCK_STREAM),
        (None, 0, socket.SOCK_DGRAM, socket.IPPROTO_UDP),
        (443, socket.AF_UNSPEC, 0, 0, socket.AI_PASSIVE),
        (8080, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED),
    ],
)
def test_an_answer_is_what_libc_gives_for_the_address_with_the_callers_arguments(args: tuple[object, ...]) -> None:
    with install(load_site(SEED).route_map):
        assert socket.getaddrinfo("shop.api.mycompany.com", *args) == libc("127.0.0.1", *args)


def test_family_errors_canonical_names_and_keywords_follow_getaddrinfo() -> None:
    with install(None, listen_host="::"):  # a dual-stack router: IPv6 loopback first, then IPv4's
        both = socket.getaddrinfo("a.localhost", 80, type=socket.SOCK_STREAM)
        assert [info[4][0] for info in both] == ["::1", "127.0.0.1"]
        assert socket.getaddrinfo(host="a.localhost", port=80, family=socket.AF_INET) == libc("127.0.0.1", 80, 2)
        named = socket.getaddrinfo("A.localhost.", 80, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
        assert named[0][3] == "a.localhost"
    with install(None), pytest.raises(socket.gaierror) as refused:  # IPv4 only: an IPv6 answer does not exist
        socket.getaddrinfo("a.localhost", 80, socket.AF_INET6)
    with pytest.raises(socket.gaierror) as plain:
        libc("127.0.0.1", 80, socket.AF_INET6)
    assert refused.value.errno == plain.value.errno


def test_other_names_reach_the_replaced_function_and_uninstall_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def system(host: str, *args: object) -> list[tuple[object, ...]]:
        asked.append(host)
        if host[0].isdigit():
            return libc(host, *args)
        raise socket.gaierror(socket.EAI_NONAME, "not known")  # what DNS would say, without asking it

    monkeypatch.setattr(socket, "getaddrinfo", system)  # stands for the system resolver: counts who asks it
    names = LoopbackNames(SITE_NAMES, ("127.0.0.1",))
    with names:
        assert socket.getaddrinfo("shop.api.mycompany.com", 80)
        assert socket.getaddrinfo("x.api.localhost", 80)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("example.org", 80)
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo("localhost", 80)
    assert asked == ["127.0.0.1", "127.0.0.1", "example.org", "localhost"]  # the run's names only numerically
    assert socket.getaddrinfo is system
    names.uninstall()  # twice is harmless
    assert socket.getaddrinfo is system


def test_a_wrapper_installed_after_ours_stays_and_ours_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    names = install(None)
    theirs = names.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: theirs(*args, **kwargs))
    wrapper = socket.getaddrinfo
    assert socket.getaddrinfo("a.localhost", 80)
    names.uninstall()
    assert socket.getaddrinfo is wrapper
    with pytest.raises(socket.gaierror):  # passed through to libc, which does not know the name
        socket.getaddrinfo("x.invalid", 80)


def test_plain_requests_reach_a_site_domain_server_on_loopback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # answers one request with a 204

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        port = listener.getsockname()[1]
        with install(load_site(SEED).route_map):
            assert requests.get(f"http://shop.api.mycompany.com:{port}/", timeout=10).status_code == 204
        thread.join(10)
