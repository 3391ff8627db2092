"""The wire format (v1) and the --mqtt URL, without a broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.mqtt.schema import COMMANDS, EVENTS, CommandError, encode_event, parse_command, qos_of
from transports.mqtt.settings import parse_mqtt_url, topic_level


def command(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_valid_commands_parse_with_their_arguments() -> None:
    say = parse_command(command(v=1, command="say", text="Hello", uninterruptible=True, id="op-1"))
    assert (say.name, say.args, say.id) == ("say", {"text": "Hello", "uninterruptible": True}, "op-1")
    assert parse_command(command(v=1, command="hangup")).args == {}
    assert parse_command(command(v=1, command="llm_config", tools=[])).args == {"tools": []}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"v": 1, "command": "say", "text": "   "}, "'text' is empty"),
        ({"v": 1, "command": "say", "text": "x", "uninterruptible": 1}, "'uninterruptible' must be bool, got int"),
        ({"v": True, "command": "interrupt"}, "missing schema version"),
        ({"v": 1, "command": "transfer"}, "missing field 'target'"),
        ({"v": 1, "command": "llm_config", "tools": ["not an object"]}, "list of at most 128 objects"),
        ({"v": 1, "command": "say", "text": "x" * 5000}, "longer than 4000"),
        ({"v": 1, "command": "interrupt", "id": 7}, "'id' must be a string"),
        ({"v": 1, "command": None}, "missing 'command'"),
    ],
)
def test_invalid_commands_say_why(body: dict, reason: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_command(json.dumps(body).encode())
    assert reason in err.value.reason


def test_refusal_keeps_the_command_name_and_id_for_the_error_event() -> None:
    with pytest.raises(CommandError) as err:
        parse_command(command(v=1, command="say", text=3, id="abc"))
    assert (err.value.command, err.value.command_id) == ("say", "abc")


def test_events_carry_the_envelope_and_exactly_their_fields() -> None:
    body = json.loads(encode_event("transcript", worker="w", session="s", seq=4, text="hi", final=False,
                                   language=None, turn_id=2))
    assert body["v"] == 1 and body["type"] == "transcript" and body["seq"] == 4 and body["text"] == "hi"
    with pytest.raises(ValueError, match="takes fields"):
        encode_event("transcript", worker="w", session="s", seq=1, text="hi")
    with pytest.raises(ValueError, match="unknown event type"):
        encode_event("gossip", worker="w", session="s", seq=1)


def test_qos_per_topic_class() -> None:
    assert qos_of("transcript", {"final": False}) == 0 and qos_of("transcript", {"final": True}) == 1
    assert EVENTS["bot_heard"].qos == 0
    assert all(EVENTS[t].qos == 1 for t in ("call_started", "call_ended", "error", "command_ack", "barge_in"))


def test_url_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = parse_mqtt_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.prefix, plain.tls, plain.username) == ("broker.local", 1883, "voxwire", False, None)
    tls = parse_mqtt_url("mqtts://op%40acme:p%3Ass@10.0.0.5/fleet/eu-1")
    assert (tls.port, tls.tls, tls.username, tls.password, tls.prefix) == (8883, True, "op@acme", "p:ss", "fleet/eu-1")
    assert "p:ss" not in repr(tls)
    monkeypatch.setenv("VOXWIRE_MQTT_PASSWORD", "from-env")
    assert parse_mqtt_url("mqtt://agent@h:1884").password == "from-env"
    for bad, words in [("http://h", "mqtt://"), ("mqtt://", "needs a host"), ("mqtt://h:99999", "port"),
                       ("mqtt://h/a/+/b", "prefix"), ("mqtt://h?ca=/x", "only makes sense"),
                       ("mqtts://h?ca=/nonexistent.pem", "does not exist"), ("mqtt://h?qos=2", "unknown options")]:
        with pytest.raises(ValueError, match=words):
            parse_mqtt_url(bad)


def test_topic_levels_cannot_smuggle_wildcards() -> None:
    assert topic_level("a/b+c#d") == "a_b_c_d"
    assert topic_level("$SYS") == "_SYS"
    assert topic_level("") == "_"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
command_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 2, "1", True, None]), "command": st.sampled_from([*COMMANDS, "x", 3])},
    optional={"text": json_values, "target": json_values, "reason": json_values, "tools": json_values,
              "system_prompt": json_values, "uninterruptible": json_values, "id": json_values, "extra": json_values},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 command_like.map(lambda v: json.dumps(v).encode())))
def test_any_payload_is_a_command_or_a_command_error(payload: bytes) -> None:
    try:
        parsed = parse_command(payload)
    except CommandError as err:
        assert err.reason
        return
    spec = COMMANDS[parsed.name]
    assert set(parsed.args) <= set(spec)
    assert all(type(parsed.args[k]) is spec[k][0] for k in parsed.args)
