"""Client sessions: private connections attached to one client connection."""

from __future__ import annotations

from proxy.session import MAX_SESSION_SRV_CONNS, Session


class FakeConn:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.closed = False
        self.owner: object = None

    def close(self) -> None:
        # As ServerConn.close: the accounting hook runs synchronously and forgets the connection.
        self.closed = True
        self.session.forget_conn(self)  # type: ignore[arg-type]


def test_close_closes_every_private_connection() -> None:
    """Regression guard (review of the shared pool, bug 2): close() iterated the list that
    forget_conn() shrinks, so every other connection stayed open."""
    session = Session("127.0.0.1", 1234)
    conns = [FakeConn(session) for _ in range(MAX_SESSION_SRV_CONNS)]
    for conn in conns:
        assert session.attach_conn(conn)  # type: ignore[arg-type]
    assert not session.attach_conn(FakeConn(session))  # type: ignore[arg-type]
    session.close()
    assert all(c.closed for c in conns)
    assert not session.conns
