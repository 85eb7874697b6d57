"""Address classification and choice, and the host name fallback chain: plain data, IPv4 and IPv6."""
import socket
import time

import pytest

from shoal_agent.addresses import (PRIVATE, PUBLIC, HostnameResolver, InterfaceAddress, NoUsableAddress, choose,
                                   choose_hostname, classify, list_addresses, parse_address, usable_hostname)


@pytest.mark.parametrize("address, expected", [
    ("142.90.1.1", PUBLIC),
    ("198.51.100.20", PUBLIC),          # documentation ranges count as public (test networks use them)
    ("10.1.2.3", PRIVATE),
    ("172.16.0.1", PRIVATE),
    ("172.31.255.254", PRIVATE),
    ("172.32.0.1", PUBLIC),             # just outside 172.16/12
    ("192.168.1.10", PRIVATE),
    ("100.64.0.1", PRIVATE),            # carrier-grade NAT, RFC 6598
    ("100.127.255.254", PRIVATE),
    ("100.128.0.1", PUBLIC),
    ("127.0.0.1", None),
    ("127.8.9.10", None),
    ("169.254.10.20", None),            # IPv4 link-local
    ("0.0.0.0", None),
    ("224.0.0.1", None),
    ("240.0.0.1", None),                # reserved
    ("2001:620:0:1b::1", PUBLIC),
    ("2a02:2788::1", PUBLIC),
    ("fd00::2", PRIVATE),               # unique local address
    ("fc12:3456::1", PRIVATE),
    ("::1", None),
    ("fe80::1", None),
    ("fe80::fc:ff:fe00:1%eth0", None),  # netifaces writes the scope
    ("fec0::1", None),                  # deprecated site-local
    ("ff02::1", None),
    ("::", None),
    ("::ffff:10.0.0.1", PRIVATE),       # IPv4-mapped: judged as the IPv4 address
    ("::ffff:142.90.1.1", PUBLIC),
    ("not-an-ip", None),
    ("", None),
])
def test_classify(address, expected):
    assert classify(address) == expected


def test_parse_address_strips_scope_and_unmaps():
    assert str(parse_address("fe80::1%eth0")) == "fe80::1"
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address(None) is None


HOST = [
    InterfaceAddress("lo", "127.0.0.1"),
    InterfaceAddress("lo", "::1"),
    InterfaceAddress("eth0", "fe80::fc:ff:fe00:1"),
    InterfaceAddress("eth0", "2001:db8:1::5"),
    InterfaceAddress("eth0", "142.90.1.1"),
    InterfaceAddress("eth1", "10.0.0.5"),
    InterfaceAddress("eth1", "fd00::5"),
]


def test_choose_prefers_ipv4_public_and_private():
    found = choose(HOST)
    assert (found.public_ip, found.private_ip, found.external_ip) == ("142.90.1.1", "10.0.0.5", None)
    assert found.load_interfaces == ("eth0",)
    assert found.announced == "142.90.1.1"


def test_choose_ipv6_only_host():
    found = choose([InterfaceAddress("lo", "::1"), InterfaceAddress("ens3", "fe80::1"),
                    InterfaceAddress("ens3", "2001:620:0:1b::1"), InterfaceAddress("ens3", "fd12::1")])
    assert (found.public_ip, found.private_ip) == ("2001:620:0:1b::1", "fd12::1")
    assert found.load_interfaces == ("ens3",)


def test_choose_configured_interface_wins():
    found = choose(HOST + [InterfaceAddress("eth2", "131.225.1.1")], interface="eth2")
    assert found.public_ip == "131.225.1.1"
    assert found.load_interfaces == ("eth2",)


def test_choose_several_public_interfaces_are_all_measured():
    found = choose([InterfaceAddress("eth0", "142.90.1.1"), InterfaceAddress("eth1", "142.90.2.1")])
    assert found.load_interfaces == ("eth0", "eth1")


def test_choose_behind_nat_uses_external_ip_and_measures_the_private_interface():
    found = choose([InterfaceAddress("lo", "127.0.0.1"), InterfaceAddress("eth0", "10.0.0.5")],
                   external_ip="142.90.1.1")
    assert (found.public_ip, found.private_ip, found.external_ip) == (None, "10.0.0.5", "142.90.1.1")
    assert found.announced == "142.90.1.1"
    assert found.load_interfaces == ("eth0",)


def test_no_usable_address_names_the_key_to_set():
    with pytest.raises(NoUsableAddress, match=r"\[general\] external_ip") as err:
        choose([InterfaceAddress("lo", "127.0.0.1"), InterfaceAddress("eth0", "169.254.1.1"),
                InterfaceAddress("eth1", "192.168.1.2"), InterfaceAddress("eth1", "fe80::1")])
    assert "192.168.1.2" in str(err.value)   # says what it did find


@pytest.mark.parametrize("name, expected", [
    ("squid.triumf.ca", "squid.triumf.ca"),
    ("Squid.TRIUMF.ca.", "squid.triumf.ca"),
    ("localhost", None),
    ("localhost.localdomain", None),
    ("vm", None),                     # unqualified: useless to clients elsewhere
    ("squid_05.example.org", "squid_05.example.org"),   # "_": deployed names the server serves
    ("bad;name.example.org", None),
    ("bad name.example.org", None),
    ("-bad.example.org", None),
    ("", None),
    (None, None),
])
def test_usable_hostname(name, expected):
    assert usable_hostname(name) == expected


def test_choose_hostname_fallback_chain():
    assert choose_hostname("cache.example.org", "rev.example.org", "fq.example.org", "1.2.3.4") == "cache.example.org"
    assert choose_hostname("", "rev.example.org", "fq.example.org", "1.2.3.4") == "rev.example.org"
    assert choose_hostname("", None, "fq.example.org", "1.2.3.4") == "fq.example.org"
    assert choose_hostname("", "localhost", "localhost", "2001:db8::1") == "2001:db8::1"


def test_resolver_caches_per_address_and_never_hangs():
    calls = []

    def reverse(addr):
        calls.append(addr)
        if addr != "142.90.1.1":
            raise socket.herror(1, "Unknown host")
        return "squid.triumf.ca"

    resolver = HostnameResolver(reverse=reverse, fqdn=lambda: "vm")
    assert resolver.hostname("142.90.1.1") == "squid.triumf.ca"
    assert resolver.hostname("142.90.1.1") == "squid.triumf.ca"
    assert calls == ["142.90.1.1"]
    assert resolver.hostname("131.225.1.1") == "131.225.1.1"   # no reverse name -> the address

    def slow(addr):
        time.sleep(5)
        return "late.example.org"

    start = time.monotonic()
    assert HostnameResolver(timeout=0.2, reverse=slow, fqdn=lambda: "localhost").hostname("1.2.3.4") == "1.2.3.4"
    assert time.monotonic() - start < 2


def test_list_addresses_on_this_machine_includes_loopback():
    found = list_addresses()
    assert InterfaceAddress("lo", "127.0.0.1") in found
    assert all("%" not in item.address for item in found)
