"""The usage buckets' tables (migration 0020; read by usage_sql.py), apart from tables.py
for its size; `tables` imports this module, so `Base.metadata` holds them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from agentrunner.adapters.state.tables import Base


class UsageRollupRow(Base):
    """Usage of executions purged before migration 0020, which folded it into the buckets
    below: no longer written or read, kept for processes of the previous version."""

    __tablename__ = "usage_rollup"

    agent: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    executions: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    input_tokens: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    output_tokens: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    cost_usd: Mapped[float | None] = mapped_column(Float)


class _UsageBucket:
    """Usage of the ended executions of one agent and tenant created in one bucket of time
    (hour or day), kept by triggers on `executions` (migration 0020); a purge leaves it."""

    agent: Mapped[str] = mapped_column(String(128), primary_key=True, sort_order=-2)
    # "" for executions without a tenant (API auth off): part of the key, never NULL.
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True, sort_order=-1)
    # Ends of one agent at once take rows no other holds (PostgreSQL), summed on reading.
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0", sort_order=1)
    executions: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), sort_order=1)
    input_tokens: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), sort_order=1)
    output_tokens: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), sort_order=1)
    cost_usd: Mapped[float] = mapped_column(Float, sort_order=1)
    priced: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), sort_order=1)  # 0: cost unknown


class UsageHourlyRow(_UsageBucket, Base):
    """Ended executions' usage per agent, tenant and hour of creation (UTC)."""

    __tablename__ = "usage_hourly"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    # No sums in the indexes: the trigger's update then changes no indexed column (HOT).
    __table_args__ = (Index("ix_usage_hourly_hour", "hour"), Index("ix_usage_hourly_tenant", "tenant", "hour"))


class UsageDailyRow(_UsageBucket, Base):
    """Ended executions' usage per agent, tenant and day of creation (UTC)."""

    __tablename__ = "usage_daily"

    day: Mapped[datetime] = mapped_column(primary_key=True)
    __table_args__ = (Index("ix_usage_daily_day", "day"), Index("ix_usage_daily_tenant", "tenant", "day"))
