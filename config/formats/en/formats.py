"""English, with times to the second and dates in ISO order: an operator lines up a
dead letter, a log line and a trace by the second, and "Dec. 2, 2026, 1:05 p.m."
says neither. The times are in TIME_ZONE (UTC)."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
