"""Read queries on the My page read model (never on other contexts' tables)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.mypage.model import MyPageRow


def rows_for_phone(session: Session, phone: str, offset: int, limit: int) -> list[MyPageRow]:
    return list(
        session.execute(
            select(MyPageRow)
            .where(MyPageRow.phone == phone)
            .order_by(MyPageRow.ordered_at.desc(), MyPageRow.order_no.desc())
            .offset(offset)
            .limit(limit)
        ).scalars()
    )


def count_for_phone(session: Session, phone: str) -> int:
    return session.execute(
        select(func.count()).select_from(MyPageRow).where(MyPageRow.phone == phone)
    ).scalar_one()
