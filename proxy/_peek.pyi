"""Type stub for the C extension ``proxy._peek`` (``ext/peek.c``): ``peek(fd)`` is 0 (nothing to
read), 1 (end of file), 2 (unread bytes) or 3 (an error); ``proxy.pidfd`` names the codes."""

def peek(fd: int, /) -> int: ...
