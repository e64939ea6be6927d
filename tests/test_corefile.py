"""Corefile plumbing: the parser reads what kubeadm, kind and vendors write; the patch appends
one fenced section and never touches an original byte; the strip gives the original back."""

from __future__ import annotations

import pytest

from crossnet.plumbing.corefile import (
    CorefileError,
    Directive,
    normalize_zone,
    parse_corefile,
    plan_forward_patch,
    strip_crossnet_fences,
)

STOCK = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster-1.com in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster-1.com
       disable denial cluster-1.com
    }
    loop
    reload
    loadbalance
}
"""

# A vendor's Corefile: comments, tabs, odd spacing, CRLF on one line, a quoted argument with a
# '#' and spaces, a one-line block, a multi-zone key, and no trailing newline.
VENDOR = (
    "# managed by ACME k8s  -- do not edit\n"
    "cluster-1.com   in-addr.arpa  {   # our zones\n"
    "\terrors\n"
    "\tkubernetes   cluster-1.com in-addr.arpa {\n"
    "\t\tpods   verified\n"
    "\t\tttl 10   # short\n"
    "\t}\r\n"
    "\thosts {\n"
    '\t\t10.0.0.9 "registry.acme.internal"   # quoted\n'
    "\t\tfallthrough\n"
    "\t}\n"
    "\thealth { lameduck 5s }\n"
    "}\n"
    "\n"
    ".:53 {\n"
    '  log . "{remote} #{type}"\n'
    "  forward . 8.8.8.8:53 1.1.1.1\n"
    "  cache 30 { disable success x.org }\n"
    "}"
)


def test_stock_corefile_parses_like_coredns_reads_it() -> None:
    corefile = parse_corefile(STOCK)
    (server,) = corefile.servers
    assert (server.zones, server.port, server.line) == ((".",), 53, 1)
    names = [d.name for d in server.directives]
    assert names == ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache",
                     "loop", "reload", "loadbalance"]
    (kubernetes,) = server.plugins("kubernetes")
    assert kubernetes.args == ("cluster-1.com", "in-addr.arpa", "ip6.arpa")
    assert kubernetes.line == 7
    assert kubernetes.block == (
        Directive("pods", ("insecure",), (), 8),
        Directive("fallthrough", ("in-addr.arpa", "ip6.arpa"), (), 9),
        Directive("ttl", ("30",), (), 10),
    )
    assert server.plugins("health")[0].block == (Directive("lameduck", ("5s",), (), 4),)
    assert server.plugins("forward")[0].args == (".", "/etc/resolv.conf")
    assert server.plugins("forward")[0].options("max_concurrent")[0].args == ("1000",)
    cache = server.plugins("cache")[0]
    assert cache.args == ("30",)
    assert [d.args for d in cache.options("disable")] == [("success", "cluster-1.com"), ("denial", "cluster-1.com")]


def test_vendor_corefile_with_comments_quotes_and_one_line_blocks() -> None:
    first, second = parse_corefile(VENDOR, source="vendor.Corefile").servers
    assert first.zones == ("cluster-1.com.", "in-addr.arpa.")
    assert (first.port, first.line) == (53, 2)
    assert [d.name for d in first.directives] == ["errors", "kubernetes", "hosts", "health"]
    kubernetes = first.plugins("kubernetes")[0]
    assert kubernetes.block == (Directive("pods", ("verified",), (), 5), Directive("ttl", ("10",), (), 6))
    hosts = first.plugins("hosts")[0]
    assert hosts.block[0] == Directive("10.0.0.9", ("registry.acme.internal",), (), 9)
    assert hosts.block[1].name == "fallthrough"
    assert first.plugins("health")[0].block == (Directive("lameduck", ("5s",), (), 12),)
    assert second.zones == (".",)
    assert second.plugins("log")[0].args == (".", "{remote} #{type}")
    assert second.plugins("forward")[0].args == (".", "8.8.8.8:53", "1.1.1.1")
    assert second.plugins("cache")[0].block == (Directive("disable", ("success", "x.org"), (), 18),)


@pytest.mark.parametrize(
    ("key", "zones", "port"),
    [
        ("example.org.", ("example.org.",), 53),
        ("Cluster-2.COM:53", ("cluster-2.com.",), 53),
        ("dns://cluster-2.com:1053", ("cluster-2.com.",), 1053),
        ("tls://.", (".",), 853),
        ("a.org:5300, B.org:5300", ("a.org.", "b.org."), 5300),
        ("10.20.0.0/16", ("20.10.in-addr.arpa.",), 53),
        ("10.0.0.0/15", ("0.10.in-addr.arpa.", "1.10.in-addr.arpa."), 53),
        ("fd00::/8:53", ("d.f.ip6.arpa.",), 53),
    ],
)
def test_server_block_keys_normalise_to_absolute_zones(key: str, zones: tuple[str, ...], port: int) -> None:
    (server,) = parse_corefile(f"{key} {{\n  errors\n}}\n").servers
    assert (server.zones, server.port) == (zones, port)


def test_keys_may_continue_after_a_trailing_comma_and_open_glued_to_the_brace() -> None:
    (server,) = parse_corefile("a.org,\n  b.org:53{\n whoami\n}").servers
    assert server.zones == ("a.org.", "b.org.")
    assert server.directives == (Directive("whoami", (), (), 3),)


def test_normalize_zone() -> None:
    assert normalize_zone("Cluster-1.Com") == ("cluster-1.com.",)
    assert normalize_zone(".") == (".",)
    with pytest.raises(ValueError, match="empty label"):
        normalize_zone("a..b")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (".:53 {\n  errors\n  health {\n    lameduck 5s\n}\n", 1, "never closed"),
        (".:53 {\n  errors\n}\n}\n", 4, "closes no block"),
        ("{\n  errors\n}\n", 1, "has no keys"),
        ("a.org,,b.org {\n errors\n}\n", 1, "empty server block key"),
        (":53 {\n errors\n}\n", 1, "empty zone"),
        ("a.org:dns {\n errors\n}\n", 1, "not a port number"),
        ("a.org:53 b.org:54 {\n errors\n}\n", 1, "different ports"),
        ("a.org {\n errors\n}\n\nA.org:53 {\n errors\n}\n", 5, "already served by the block at line 1"),
        (".:53 {\n  log \"unterminated\n}\n", 2, "never closed; add the missing '\"'"),
        (".:53\n{\n errors\n}\n", 1, "not followed by '{'"),
        (".:53 {\n  cache 30\n  {\n  }\n}\n", 3, "put '{' at the end of the line"),
        ("udp://.:53 {\n errors\n}\n", 1, "unknown transport"),
    ],
)
def test_malformed_corefiles_name_file_line_and_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(CorefileError) as caught:
        parse_corefile(text, source="cm/coredns")
    message = str(caught.value)
    assert message.startswith(f"cm/coredns:{line}: "), message
    assert words in message
    assert "; " in message  # problem; fix


def test_forward_patch_of_the_stock_corefile_is_exactly_one_appended_fence() -> None:
    patch = plan_forward_patch(STOCK, "run-7", {"cluster-2.com": ["10.20.0.3", "10.20.1.4"]})
    assert patch.patched == STOCK + (
        "# crossnet begin run-7\n"
        "cluster-2.com:53 {\n"
        "    errors\n"
        "    cache 30\n"
        "    forward . 10.20.0.3 10.20.1.4\n"
        "}\n"
        "# crossnet end run-7\n"
    )
    servers = parse_corefile(patch.patched).servers
    assert [s.zones for s in servers] == [(".",), ("cluster-2.com.",)]
    assert servers[1].plugins("forward")[0].args == (".", "10.20.0.3", "10.20.1.4")
    assert patch.restore() == STOCK
    assert strip_crossnet_fences(patch.patched) == STOCK


def test_vendor_corefile_without_trailing_newline_is_restored_byte_for_byte() -> None:
    forwards = {"cluster-3.com": ["10.30.0.3:53"], "Cluster-2.com.": ["10.20.0.3:5353", "[fd00::3]:53"]}
    patch = plan_forward_patch(VENDOR, "r1", forwards, source="vendor.Corefile")
    assert patch.patched.startswith(VENDOR + "\n# crossnet begin r1\n")
    assert not patch.patched.endswith("\n"), "a newline-less original stays newline-less"
    zones = [s.zones for s in parse_corefile(patch.patched).servers]
    assert zones[2:] == [("cluster-2.com.",), ("cluster-3.com.",)], "one block per peer, sorted by domain"
    assert "forward . 10.20.0.3:5353 [fd00::3]:53\n" in patch.patched
    assert strip_crossnet_fences(patch.patched).encode() == VENDOR.encode()
    assert patch.restore() == VENDOR


@pytest.mark.parametrize("original", ["", "\n", ".:53 {\n errors\n}\n\n\n", ".:53 {\n errors\n}", "# only a comment"])
def test_strip_inverts_the_patch_for_any_ending(original: str) -> None:
    patch = plan_forward_patch(original, "x", {"cluster-2.com": ["10.20.0.3"]})
    assert patch.patched.startswith(original)
    assert strip_crossnet_fences(patch.patched) == original


def test_strip_removes_every_fence_and_leaves_text_without_one_alone() -> None:
    once = plan_forward_patch(STOCK, "a", {"cluster-2.com": ["10.20.0.3"]}).patched
    twice = once + "# crossnet begin b\nx.org:53 {\n    errors\n}\n# crossnet end b\n"
    assert strip_crossnet_fences(twice) == STOCK
    assert strip_crossnet_fences(VENDOR) == VENDOR


@pytest.mark.parametrize(
    ("original", "forwards", "words"),
    [
        (STOCK + "cluster-2.com:53 {\n    forward . 10.0.0.1\n}\n", {"cluster-2.com": ["10.20.0.3"]},
         "Corefile:24: a server block for cluster-2.com. already exists and crossnet did not make it"),
        (STOCK + "\n# crossnet begin old\n# crossnet end old\n", {"cluster-2.com": ["10.20.0.3"]}, "crossnet down"),
        (STOCK, {"cluster-1.com": ["10.20.0.3"]}, "Corefile:7: cluster-1.com. is this cluster's own domain"),
        (STOCK, {"cluster-2.com": ["cluster-2-dns"]}, "is not an IP or IP:port"),
        (STOCK, {"cluster-2.com": ["10.20.0.3:99999"]}, "is not an IP or IP:port"),
        (STOCK, {"cluster-2.com": []}, "needs a list of forward targets"),
        (STOCK, {"cluster-2.com": "10.20.0.3"}, "needs a list of forward targets"),
        (STOCK, {".": ["10.20.0.3"]}, "root zone"),
        (STOCK, {"cluster-2.com": ["10.20.0.3"], "CLUSTER-2.com.": ["10.20.0.4"]}, "more than once"),
        (STOCK, {}, "no peer domains"),
        (".:53 {\n errors\n", {"cluster-2.com": ["10.20.0.3"]}, "Corefile:1: '{' opened here is never closed"),
    ],
)
def test_patch_refuses_with_the_fix(original: str, forwards: dict[str, list[str]], words: str) -> None:
    with pytest.raises(CorefileError) as caught:
        plan_forward_patch(original, "run-1", forwards)
    assert words in str(caught.value)


def test_patch_refuses_a_run_id_that_cannot_be_a_fence() -> None:
    with pytest.raises(CorefileError, match="run id 'two words'"):
        plan_forward_patch(STOCK, "two words", {"cluster-2.com": ["10.20.0.3"]})


def test_strip_refuses_a_fence_without_its_end() -> None:
    text = STOCK + "# crossnet begin r9\ncluster-2.com:53 {\n}\n"
    with pytest.raises(CorefileError, match=r"^Corefile:24: '# crossnet begin r9' has no matching"):
        strip_crossnet_fences(text)
