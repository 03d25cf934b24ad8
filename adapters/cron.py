"""CronCalendar on cronsim: cron expressions read in IANA time zones (zoneinfo).

cronsim follows Debian cron on daylight-saving changes. An expression whose minute and
hour fields are fixed (values, lists, ranges: `30 2 * * *`, `0 9-17 * * *`) follows the
wall clock: a time that falls in the spring gap fires at the first instant after it
(02:30 -> 03:00), one that happens twice in autumn fires once (the first time). One whose
minute or hour field starts with `*` (`*/15 * * * *`, `0 */2 * * *`, `*/30 2 * * *`) fires
on real instants: a tick in the gap does not happen, one in the repeated hour fires twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskforge.domain.errors import ValidationError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The named expressions cron itself knows, in their five-field form."""

FIELDS = 5
_JUST_AFTER = timedelta(microseconds=1)


def expand(cron: str) -> str:
    return MACROS.get(cron.strip().lower(), cron)


@lru_cache(maxsize=256)
def _zone(timezone: str) -> ZoneInfo:
    """A stored schedule's zone; one this system does not know (gone from its zone database
    since the schedule was saved) is a ValidationError naming `timezone`."""
    try:
        return ZoneInfo(timezone)
    # OSError: a folder of the zone database, or a file it cannot read.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            "timezone",
            f"unknown time zone {timezone!r}: this system's zone database has no such zone; "
            "save the schedule with an IANA name it knows",
        ) from None


class CronsimCalendar:
    """CronCalendar: five-field expressions (minute hour day-of-month month day-of-week,
    with ranges, steps, names, `L` and `#`) and the @-macros."""

    def check(self, cron: str) -> None:
        expression = expand(cron)
        if len(expression.split()) != FIELDS:
            raise ValidationError(
                "cron",
                "must have 5 fields (minute hour day-of-month month day-of-week) "
                f"or be one of {', '.join(MACROS)}",
            )
        try:
            next(CronSim(expression, datetime.now(UTC)))
        except CronSimError as exc:
            if _a_day_no_month_has(expression):
                raise ValidationError(
                    "cron", "the expression never fires: none of its months has that day"
                ) from None
            raise ValidationError("cron", f"invalid cron expression: {exc}") from None
        except StopIteration:
            raise ValidationError("cron", "the expression never fires") from None

    def next_after(self, cron: str, timezone: str, moment: datetime) -> datetime:
        local = moment.astimezone(_zone(timezone))
        # cronsim reads a fixed-time expression in wall time: from the second pass of a
        # repeated hour (02:10 CET) it gives back the first pass's tick (02:30 CEST), which
        # is already over. That tick was the day's one; the next is strictly after `moment`.
        ticks = (tick.astimezone(UTC) for tick in CronSim(expand(cron), local))
        return next(tick for tick in ticks if tick > moment)

    def latest_at_or_before(self, cron: str, timezone: str, moment: datetime) -> datetime | None:
        # cronsim walks back from strictly before its start: start just after `moment`.
        local = (moment + _JUST_AFTER).astimezone(_zone(timezone))
        try:
            latest = next(CronSim(expand(cron), local, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None
        # Walking back from the second pass of a repeated hour (02:10 CET), cronsim passes
        # over a fixed-time tick of the first pass (02:30 CEST) to the day before; the ticks
        # forward from there, the ones that fire, find it again.
        following = self.next_after(cron, timezone, latest)
        while following <= moment:
            latest, following = following, self.next_after(cron, timezone, following)
        return latest


def _a_day_no_month_has(expression: str) -> bool:
    """Whether each field reads on its own but the day-of-month is in none of the months
    (`0 0 30 2 *`), which cronsim calls a bad day-of-month."""
    minute, hour, day, month, weekday = expression.split()
    for alone in (f"{minute} {hour} {day} * {weekday}", f"{minute} {hour} * {month} {weekday}"):
        try:
            next(CronSim(alone, datetime.now(UTC)))
        except (CronSimError, StopIteration):
            return False
    return True
