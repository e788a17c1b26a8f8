"""Bursts for tests: a batch's HITs sent to a platform on our side (no platform call)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from base.identity import Caller
from platforms import burst as bursts
from platforms import registry
from platforms.models import PlatformBatch
from tests.factories import in_uow


def make_burst(session: Session, *, owner, batch_id: int, now, platform: str = "mturk", hits: int = 1000,
               split: bool = False, key: str = "k1") -> PlatformBatch:
    made, _ = in_uow(bursts.create, session, actor=Caller(owner.id, owner.role), batch_id=batch_id,
                     platform=platform, platform_title=registry.platform(platform).title,
                     fees=registry.fees(platform), hits=hits, split=split, key=key, now=now)
    return made
