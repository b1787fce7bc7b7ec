"""Date and time formats for the admin (FORMAT_MODULE_PATH): the locale's own
formats win over settings like DATETIME_FORMAT, so they are overridden here."""
