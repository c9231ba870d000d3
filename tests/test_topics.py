"""The topic tree (badge_bridge/topics.py) against what docs/mqtt.md promises, and the topics it spells."""

from __future__ import annotations

import re

import pytest

from badge_bridge import topics
from badge_bridge.topics import ANY, Topics
from tests.conftest import ROOT

ROW = re.compile(r"^\| `(<p>/[^`]+)` \| [^|]+ \| ([01]) \| (no|\*\*yes\*\*)[^|]*\|", re.MULTILINE)


def documented() -> set[tuple[str, int, bool]]:
    """(pattern, QoS, retained) of each row of docs/mqtt.md's topic table."""
    text = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    rows = {(re.sub(r"<(\w+)>", r"{\1}", topic.replace("<p>", "{prefix}")), int(qos), retained != "no")
            for topic, qos, retained in ROW.findall(text)}
    assert len(rows) > 10, "docs/mqtt.md: the topic table was not found"
    return rows


def test_the_tree_is_the_documented_contract() -> None:
    firmware = {topics.CONTROLLER_CONFIG, topics.CONTROLLER_CONFIG_SET}  # docs/firmware.md: not yet the contract
    assert {(t.pattern, t.qos, t.retained) for t in topics.tree()
            if t.pattern.startswith("{prefix}") and t not in firmware} == documented()


def test_every_topic_has_a_known_publisher() -> None:
    for t in topics.tree():
        assert t.publishers and set(t.publishers + t.subscribers) <= set(topics.ROLES), t.pattern


def test_a_role_gets_the_topics_it_uses() -> None:
    camera = {t.pattern for t in topics.tree(topics.CAMERA)}
    assert camera == {"{prefix}/cameras/{camera}/events", "{prefix}/cameras/{camera}/status",
                      "{prefix}/cameras/{camera}/requests"}
    assert topics.CONSOLE_COMMANDS in topics.tree(topics.CONSOLE)
    with pytest.raises(ValueError, match="role"):
        topics.tree("nobody")


def test_topics_under_the_prefix() -> None:
    t = Topics("site/v1/")  # a trailing slash is not doubled
    assert t.controller_events("ctl-lobby") == "site/v1/controllers/ctl-lobby/events"
    assert t.controller_events() == f"site/v1/controllers/{ANY}/events"
    assert t.door_state("noc") == "site/v1/bridge/doors/noc"
    assert t.controller_config_set("ctl-lobby") == "site/v1/controllers/ctl-lobby/config/set"
    assert t.key_of("site/v1/cameras/cam-1/status") == "cam-1"
    assert t.controller_of("site/v1/cameras/cam-1/status") is None
    assert t.controller_of("site/v1/controllers/ctl-lobby/events/x") is None
