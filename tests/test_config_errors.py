"""Bad configurations, as data: each file in tests/data/config/bad/ states the messages it must produce.

A ``# expect: <text>`` line is a substring that one of the messages must contain (``{file}`` stands for
the file's path, so the substrings pin ``file:line`` and the keyword); ``# expect-count: N`` is the
exact number of messages, so nothing extra (a cascade of follow-up errors) slips in. The same with
``# warn: <text>`` and ``# warn-count: N`` for the ``[WARNING]`` lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, check, load

BAD = Path(__file__).parent / "data" / "config" / "bad"
CASES = sorted(BAD.glob("*.cfg"))


def expectations(path: Path, kind: str = "expect") -> tuple[list[str], int | None]:
    expected: list[str] = []
    count = None
    for line in path.read_text().splitlines():
        if line.startswith(f"# {kind}: "):
            expected.append(line.removeprefix(f"# {kind}: ").replace("{file}", str(path)))
        elif line.startswith(f"# {kind}-count: "):
            count = int(line.removeprefix(f"# {kind}-count: "))
    return expected, count


def test_there_are_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_bad_config(path: Path) -> None:
    expected, count = expectations(path)
    assert expected, f"{path.name} states no '# expect:' line"
    messages = check([str(path)], env={})
    for text in expected:
        assert any(text in m for m in messages), f"missing {text!r} in:\n" + "\n".join(messages)
    if count is not None:
        assert len(messages) == count, "\n".join(messages)
    with pytest.raises(ConfigError) as err:
        load([str(path)], env={})
    assert err.value.messages == messages
    warned, warn_count = expectations(path, "warn")
    warnings = err.value.warnings
    for text in warned:
        assert any(text in m for m in warnings), f"missing warning {text!r} in:\n" + "\n".join(warnings)
    if warn_count is not None:
        assert len(warnings) == warn_count, "\n".join(warnings)
    for warning in warnings:
        assert warning.startswith("[WARNING] config : ")


def test_every_message_is_one_alert_line() -> None:
    for path in CASES:
        for message in check([str(path)], env={}):
            assert message.startswith("[ALERT] config : ")
            assert "\n" not in message
            assert f"{path}:" in message  # names the file and a line


# The four messages quoted in the documentation, exactly.
EXACT = {
    "typo_keyword.cfg": "[ALERT] config : parsing [{file}:8] : unknown keyword 'tiemout' in 'backend'"
    " section; did you mean 'timeout'?",
    "missing_backend.cfg": "[ALERT] config : [{file}:7] : frontend 'fe': 'default_backend': no backend named"
    " 'nope' (declare it with 'backend nope' or 'listen nope')",
    "bad_time_unit.cfg": "[ALERT] config : parsing [{file}:8] : 'timeout client': invalid time unit 'sx' in"
    " '10sx' (expected us, ms, s, m, h or d)",
    "server_without_port.cfg": "[ALERT] config : parsing [{file}:9] : 'server be1': missing port in address"
    " '127.0.0.1' (expected <host>:<port>)",
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_wording(name: str) -> None:
    path = BAD / name
    assert EXACT[name].replace("{file}", str(path)) in check([str(path)], env={})


def test_parsing_goes_on_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.cfg"
    path.write_text("backend b\n    balance nope\n    retries 7\n    server s 127.0.0.1:1\n    retries x\n")
    messages = check([str(path)])
    assert [m.split("] : ")[0].rsplit(":", 1)[1] for m in messages] == ["2", "5"]


def test_whole_config_checks_wait_for_a_clean_parse(tmp_path: Path) -> None:
    # With a parse error, a dangling default_backend is not reported (it may be a consequence).
    path = tmp_path / "t.cfg"
    path.write_text("frontend fe\n    bind :1\n    default_backend nope\n    timeout client x\n")
    (message,) = check([str(path)])
    assert "'timeout client': invalid" in message
