"""Load-balancing algorithms (proxy.balance): distribution, ties, fallbacks, stability."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from proxy.balance import Balancer, balancer_names, make_balancer
from proxy.config.model import Server


def servers(*weights: int, maxconn: Sequence[int] = ()) -> list[Server]:
    mc = list(maxconn) or [0] * len(weights)
    return [
        Server(name=f"s{i}", host="127.0.0.1", port=8000 + i, weight=w, maxconn=mc[i])
        for i, w in enumerate(weights)
    ]


def all_usable(i: int) -> bool:
    return True


def no_load(i: int) -> int:
    return 0


def picks(
    b: Balancer,
    n: int,
    usable: Callable[[int], bool] = all_usable,
    load: Callable[[int], int] = no_load,
    ip: str = "10.0.0.1",
) -> list[int | None]:
    return [b.pick(client_ip=ip, usable=usable, load=load) for _ in range(n)]


# -- registry -------------------------------------------------------------------------------------
def test_registry_names() -> None:
    assert balancer_names() == {"roundrobin", "leastconn", "first", "source", "random"}


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="unknown balance algorithm 'static-rr'"):
        make_balancer("static-rr", servers(1))


# -- random (power of two choices) -----------------------------------------------------------------
def test_random_prefers_the_less_loaded_of_two_draws() -> None:
    b = make_balancer("random", servers(1, 1, 1))
    b._rng.seed(1)  # type: ignore[attr-defined]
    got = Counter(picks(b, 3000, load=lambda i: [10, 0, 10][i]))
    # server 1 wins every draw it is in: 1 - (2/3)^2 = 5/9 of the picks
    assert abs(got[1] / 3000 - 5 / 9) < 0.05 and got[0] and got[2]
    even = Counter(picks(b, 3000))
    assert all(abs(n / 3000 - 1 / 3) < 0.05 for n in even.values())


def test_random_follows_the_weights() -> None:
    b = make_balancer("random", servers(1, 3))
    b._rng.seed(2)  # type: ignore[attr-defined]
    got = Counter(picks(b, 4000))
    assert abs(got[1] / 4000 - 3 / 4) < 0.03  # equal loads: the first draw wins, weighted 1:3


@pytest.mark.parametrize("name", sorted(balancer_names()))
def test_no_usable_server_gives_none(name: str) -> None:
    b = make_balancer(name, servers(1, 1))
    assert picks(b, 3, usable=lambda i: False) == [None, None, None]
    assert make_balancer(name, []).pick(client_ip="1.1.1.1", usable=all_usable, load=no_load) is None


@pytest.mark.parametrize("name", sorted(balancer_names()))
def test_weight_zero_is_never_picked(name: str) -> None:
    b = make_balancer(name, servers(0, 1, 0))
    assert set(picks(b, 50)) == {1}
    assert set(picks(make_balancer(name, servers(0, 0)), 5)) == {None}


@pytest.mark.parametrize("name", sorted(balancer_names()))
def test_disabled_servers_are_excluded_by_the_callers_usable(name: str) -> None:
    srvs = servers(1, 1, 1)
    srvs[1].disabled = True
    b = make_balancer(name, srvs)
    got = {
        b.pick(client_ip=f"10.0.{i // 256}.{i % 256}", usable=lambda j: not srvs[j].disabled, load=no_load)
        for i in range(300)
    }
    assert 1 not in got and got <= {0, 2}


# -- roundrobin -----------------------------------------------------------------------------------
def test_roundrobin_weights_1_3_exact() -> None:
    b = make_balancer("roundrobin", servers(1, 3))
    got = picks(b, 400)
    assert Counter(got) == {0: 100, 1: 300}
    # smooth: every window of 4 consecutive picks holds server 0 exactly once
    for start in range(0, 400, 4):
        assert got[start : start + 4].count(0) == 1


def test_roundrobin_smooth_sequence() -> None:
    # the classic smooth-WRR sequence for weights 5,1,1
    assert picks(make_balancer("roundrobin", servers(5, 1, 1)), 7) == [0, 0, 1, 0, 2, 0, 0]


def test_roundrobin_equal_weights_rotate() -> None:
    assert picks(make_balancer("roundrobin", servers(1, 1, 1)), 6) == [0, 1, 2, 0, 1, 2]


def test_roundrobin_skips_unusable_and_keeps_proportions() -> None:
    b = make_balancer("roundrobin", servers(1, 2, 1))
    assert Counter(picks(b, 300, usable=lambda i: i != 1)) == {0: 150, 2: 150}
    assert Counter(picks(b, 400)) == {0: 100, 1: 200, 2: 100}


# -- leastconn ------------------------------------------------------------------------------------
def test_leastconn_least_loaded() -> None:
    b = make_balancer("leastconn", servers(1, 1, 1))
    loads = [3, 1, 2]
    assert picks(b, 3, load=loads.__getitem__) == [1, 1, 1]


def test_leastconn_is_relative_to_weight() -> None:
    b = make_balancer("leastconn", servers(1, 2))
    assert picks(b, 1, load=[2, 3].__getitem__) == [1]  # 3/2 < 2/1
    assert picks(b, 1, load=[1, 3].__getitem__) == [0]  # 1/1 < 3/2
    # a tie (1/1 == 2/2) goes to the next in rotation order: here 1, since 0 was picked last
    assert picks(b, 2, load=[1, 2].__getitem__) == [1, 0]


def test_leastconn_ties_go_round_robin() -> None:
    b = make_balancer("leastconn", servers(1, 1, 1))
    assert picks(b, 7) == [0, 1, 2, 0, 1, 2, 0]
    loads = [5, 0, 0]
    assert picks(b, 4, load=loads.__getitem__) == [1, 2, 1, 2]


def test_leastconn_tracks_live_load() -> None:
    b = make_balancer("leastconn", servers(1, 1))
    loads = [0, 0]
    for _ in range(10):
        i = b.pick(client_ip="", usable=all_usable, load=loads.__getitem__)
        assert i is not None
        loads[i] += 1
    assert loads == [5, 5]


def test_leastconn_skips_unusable() -> None:
    b = make_balancer("leastconn", servers(1, 1, 1))
    assert set(picks(b, 5, usable=lambda i: i == 2, load=[0, 0, 9].__getitem__)) == {2}


# -- first ----------------------------------------------------------------------------------------
def test_first_fills_in_order() -> None:
    b = make_balancer("first", servers(1, 1, 1, maxconn=[2, 2, 0]))
    assert picks(b, 1, load=[0, 0, 0].__getitem__) == [0]
    assert picks(b, 1, load=[1, 0, 0].__getitem__) == [0]
    assert picks(b, 1, load=[2, 1, 5].__getitem__) == [1]
    assert picks(b, 1, load=[2, 2, 50].__getitem__) == [2]  # maxconn 0: unlimited


def test_first_all_full_falls_back_to_first_usable() -> None:
    b = make_balancer("first", servers(1, 1, maxconn=[1, 1]))
    assert picks(b, 1, load=[1, 1].__getitem__) == [0]
    assert picks(b, 1, usable=lambda i: i == 1, load=[0, 3].__getitem__) == [1]


def test_first_skips_unusable() -> None:
    b = make_balancer("first", servers(1, 1, 1, maxconn=[5, 5, 5]))
    assert picks(b, 2, usable=lambda i: i != 0) == [1, 1]


# -- source ---------------------------------------------------------------------------------------
def test_source_is_stable_for_one_ip() -> None:
    b = make_balancer("source", servers(1, 1, 1))
    for ip in ("10.0.0.1", "192.168.7.42", "::1", "2001:db8::5"):
        assert len(set(picks(b, 50, ip=ip))) == 1


def test_source_is_process_independent() -> None:
    # crc32 over the weighted layout: the same in every worker and after a restart
    b = make_balancer("source", servers(1, 3))
    for ip in ("10.0.0.1", "10.0.0.2", "172.16.4.4"):
        point = zlib.crc32(ip.encode()) % 4
        assert picks(b, 1, ip=ip) == [0 if point < 1 else 1]


def test_source_spreads_by_weight() -> None:
    b = make_balancer("source", servers(1, 3))
    got = Counter(
        b.pick(client_ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", usable=all_usable, load=no_load)
        for i in range(4000)
    )
    assert 800 <= got[0] <= 1200 and 2800 <= got[1] <= 3200


def test_source_remaps_when_a_server_leaves() -> None:
    b = make_balancer("source", servers(1, 1, 1))
    ips = [f"10.1.1.{i}" for i in range(200)]
    before = {ip: b.pick(client_ip=ip, usable=all_usable, load=no_load) for ip in ips}
    down = 1
    after = {ip: b.pick(client_ip=ip, usable=lambda i: i != down, load=no_load) for ip in ips}
    assert down not in after.values()
    assert {before[ip] for ip in ips} == {0, 1, 2}
