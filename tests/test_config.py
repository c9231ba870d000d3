"""The site file: what loads, and the exact message an operator gets for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from badge_bridge.config import DATABASE_URL_ENV, ConfigError, SiteConfig, load_config

EXAMPLE_SITE = Path(__file__).resolve().parents[1] / "site.example.toml"
KNOWN_AREAS = "cage-7, hall-a, hall-a-mantrap, lobby, noc, outside"


@pytest.fixture(autouse=True)
def no_database_url_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)


def site_with(tmp_path: Path, *replacements: tuple[str, str], append: str = "") -> Path:
    """The example site file with text replaced (each old text must occur) and text appended."""
    text = EXAMPLE_SITE.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "site.toml"
    path.write_text(text + append)
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return str(raised.value)


def test_the_example_site_loads(site: SiteConfig) -> None:
    assert site.site.name == "DC1 Frankfurt" and site.site.timezone == "Europe/Berlin"
    assert [d.key for d in site.doors] == ["main-entrance", "hall-a", "cage-7", "noc", "hall-a-mantrap"]
    assert (len(site.readers), len(site.controllers), len(site.cameras), len(site.access_levels)) == (8, 3, 2, 5)
    hall = site.doors[1]
    assert (hall.area_out, hall.area_in, hall.factors) == ("hall-a-mantrap", "hall-a", ["card", "pin"])
    assert [(i.key, i.doors) for i in site.interlocks] == [("hall-a-mantrap", ["hall-a-mantrap", "hall-a"])]
    business = site.schedules[1]
    assert (business.intervals[0].start_minute(), business.intervals[0].end_minute()) == (7 * 60, 19 * 60)
    assert site.schedules[0].intervals[0].end_minute() == 24 * 60
    assert site.base_dir == EXAMPLE_SITE.parent
    assert site.audit.batch_max == 1000


# Each case: replacements in the example file (or text appended), and the exact error after "<path>: ".
MISTAKES = {
    "unknown-key": ([('instance = "bridge-1"', 'instance = "bridge-1"\ncolour = "blue"')], "",
                    "site.colour: Extra inputs are not permitted"),
    "unknown-section": ([], "\n[cameras_extra]\nx = 1\n", "cameras_extra: Extra inputs are not permitted"),
    "duplicate-item-key": ([], '\n[[areas]]\nkey = "lobby"\n', "areas[6].key: duplicate key 'lobby'"),
    "unknown-area": ([('area_in = "hall-a"', 'area_in = "hall-x"')], "",
                     f"doors[1].area_in: unknown area 'hall-x' (expected one of: {KNOWN_AREAS})"),
    "unknown-controller": ([('controller = "esp-noc"', 'controller = "esp-x"')], "",
                           "readers[5].controller: unknown controller 'esp-x' "
                           "(expected one of: ctl-hall-a, ctl-lobby, esp-noc)"),
    "unknown-schedule": ([('{ door = "noc", schedule = "business" }', '{ door = "noc", schedule = "nights" }')], "",
                         "access_levels[0].doors[1].schedule: unknown schedule 'nights' "
                         "(expected one of: always, business)"),
    "unknown-camera-door": ([('doors = ["main-entrance"]', 'doors = ["back-door"]')], "",
                            "cameras[0].doors[0]: unknown door 'back-door' "
                            "(expected one of: cage-7, hall-a, hall-a-mantrap, main-entrance, noc)"),
    "bad-time-zone": ([('timezone = "Europe/Berlin"', 'timezone = "Mars/Olympus"')], "",
                      "site.timezone: unknown time zone 'Mars/Olympus' "
                      "(expected an IANA name such as 'Europe/Berlin')"),
    "end-before-start": ([('start = "07:00", end = "19:00"', 'start = "19:00", end = "07:00"')], "",
                         "schedules[1].intervals[0]: start 19:00 must be before end 07:00 (end at most 24:00)"),
    "not-a-time-of-day": ([('start = "07:00", end = "19:00"', 'start = "07:00", end = "24:30"')], "",
                          "schedules[1].intervals[0]: '24:30' is not a time of day (expected HH:MM, 00:00 to 24:00)"),
    "factors-without-card": ([('factors = ["card", "pin"]', 'factors = ["pin"]')], "",
                             "doors[1].factors: must include 'card': "
                             "every request starts from a credential identifier"),
    "no-site-section": ([('[site]\nname = "DC1 Frankfurt"', '[place]\nname = "DC1 Frankfurt"')], "",
                        "site: Field required"),
}


@pytest.mark.parametrize("replacements, append, message", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_names_the_file_and_field(
    replacements: list[tuple[str, str]], append: str, message: str, tmp_path: Path
) -> None:
    path = site_with(tmp_path, *replacements, append=append)
    assert config_error(path).splitlines()[0] == f"{path}: {message}"


def test_every_reference_error_is_its_own_line(tmp_path: Path) -> None:
    path = site_with(tmp_path, ('area_in = "hall-a"', 'area_in = "hall-x"'),
                     ('controller = "esp-noc"', 'controller = "esp-x"'))
    assert config_error(path).splitlines() == [
        f"{path}: doors[1].area_in: unknown area 'hall-x' (expected one of: {KNOWN_AREAS})",
        f"{path}: readers[5].controller: unknown controller 'esp-x' (expected one of: ctl-hall-a, ctl-lobby, esp-noc)",
    ]


def test_a_missing_file(tmp_path: Path) -> None:
    assert config_error(tmp_path / "site.toml") == f"{tmp_path / 'site.toml'}: no such site file"


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    assert config_error(tmp_path).startswith(f"{tmp_path}: cannot read the site file (")


@pytest.mark.parametrize(
    "text",
    [
        '[site\nname = "x"\n',  # unclosed table header
        '[site]\nname = "x"\nname = "y"\n',  # duplicate key
        '[site]\nname = "x"\n[site]\ntimezone = "UTC"\n',  # duplicate table
    ],
    ids=["syntax", "duplicate-key", "duplicate-table"],
)
def test_not_toml(text: str, tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    assert config_error(path).startswith(f"{path}: not valid TOML: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'[site]\nname = "DC1 Frankfurt \xe4"\n')
    assert config_error(path) == f"{path}: the site file is not UTF-8 text"


def test_relative_paths_are_resolved_from_the_file_s_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    site_with(tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/site.toml")  # a relative site-file path, from another working folder
    folder = (tmp_path / "conf").resolve()
    assert config.database_url() == f"sqlite:///{folder / 'var' / 'badge-bridge.db'}"
    assert config.keys_dir() == folder / "var" / "keys"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:////srv/bb/bridge.db", "sqlite:////srv/bb/bridge.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg://bridge@db1/badge_bridge", "postgresql+psycopg://bridge@db1/badge_bridge"),
    ],
)
def test_absolute_and_server_urls_are_kept(url: str, expected: str, tmp_path: Path) -> None:
    path = site_with(tmp_path, ('url = "sqlite:///var/badge-bridge.db"', f'url = "{url}"'))
    assert load_config(path).database_url() == expected


def test_the_environment_overrides_the_file_s_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(site_with(tmp_path))
    assert config.database_url() == f"sqlite:///{tmp_path.resolve() / 'var' / 'badge-bridge.db'}"
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql+psycopg://bridge:secret@db1/badge_bridge")
    assert config.database_url() == "postgresql+psycopg://bridge:secret@db1/badge_bridge"
    monkeypatch.setenv(DATABASE_URL_ENV, "sqlite:///other.db")  # relative: from the site file's folder too
    assert config.database_url() == f"sqlite:///{tmp_path.resolve() / 'other.db'}"
    monkeypatch.setenv(DATABASE_URL_ENV, "")  # set but empty: the file's URL
    assert config.database_url() == f"sqlite:///{tmp_path.resolve() / 'var' / 'badge-bridge.db'}"


def test_a_door_served_by_two_partitions_is_refused(tmp_path: Path) -> None:
    """The lobby's readers on one partition and its camera on another: two bridges would decide its cards."""
    path = site_with(tmp_path, ('key = "cam-lobby"', 'key = "cam-lobby"\npartition = "east"'))
    errors = config_error(path).splitlines()
    assert any("cameras[0].partition: door 'main-entrance' is in partition 'bridge-1'" in e for e in errors), errors


def test_a_partition_view_holds_only_its_own_devices(tmp_path: Path) -> None:
    path = site_with(tmp_path, ('key = "ctl-hall-a"', 'key = "ctl-hall-a"\npartition = "halls"'))
    config = load_config(path)
    assert config.partitions() == ["bridge-1", "halls"]
    assert config.door_partitions() == {"main-entrance": "bridge-1", "hall-a": "halls", "cage-7": "halls",
                                        "noc": "bridge-1", "hall-a-mantrap": "halls"}
    halls = config.partition_view("halls")
    assert halls.site.instance == "halls" and halls.partitioned
    assert [c.key for c in halls.controllers] == ["ctl-hall-a"]
    assert {r.door for r in halls.readers} == {"hall-a", "cage-7", "hall-a-mantrap"}
    assert {d.key for d in halls.doors} == {"hall-a", "cage-7", "hall-a-mantrap"} and halls.cameras == []
    assert halls.foreign_doors == ["main-entrance", "noc"]
    assert not config.partitioned and len(halls.areas) == len(config.areas)
    with pytest.raises(ConfigError, match="partition 'west' is not in the site file"):
        config.partition_view("west")
