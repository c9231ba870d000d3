"""Migrations match the models, and the site file syncs into the installation tables by key."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from badge_bridge import models as m
from badge_bridge.config import SiteConfig
from badge_bridge.db import schema_is_current
from badge_bridge.site_sync import sync_site


def test_migrations_create_exactly_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), m.Base.metadata)
    assert diff == []
    assert schema_is_current(engine)


def test_site_sync_is_idempotent_and_follows_the_file(engine: Engine, site: SiteConfig) -> None:
    with Session(engine) as session, session.begin():
        sync_site(session, site)
    with Session(engine) as session, session.begin():
        sync_site(session, site)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(m.Door)) == len(site.doors)
        hall = session.scalar(select(m.Door).where(m.Door.key == "hall-a"))
        assert hall is not None and hall.factors == "card,pin" and hall.area_in.key == "hall-a"
        business = session.scalar(select(m.Schedule).where(m.Schedule.key == "business"))
        assert business is not None
        assert sorted((i.weekday, i.start_minute, i.end_minute) for i in business.intervals) == [
            (d, 420, 1140) for d in range(5)
        ]
        assert len(business.holidays) == 4
        cam = session.scalar(select(m.Camera).where(m.Camera.key == "cam-lobby"))
        assert cam is not None and [d.key for d in cam.doors] == ["main-entrance"]
        assert session.scalar(select(func.count()).select_from(m.AccessLevelDoor)) == 11

    smaller = site.model_copy(update={
        "doors": [d for d in site.doors if d.key != "noc"],
        "readers": [r for r in site.readers if r.door != "noc"],
        "access_levels": [lvl.model_copy(update={"doors": [ld for ld in lvl.doors if ld.door != "noc"]})
                          for lvl in site.access_levels if lvl.key != "noc-24x7"],
    })
    with Session(engine) as session, session.begin():
        sync_site(session, smaller)
    with Session(engine) as session:
        assert session.scalar(select(m.Door).where(m.Door.key == "noc")) is None
        assert session.scalar(select(m.AccessLevel).where(m.AccessLevel.key == "noc-24x7")) is None
        assert session.scalar(select(func.count()).select_from(m.AccessLevelDoor)) == 9
