"""Errors raised by the zoo."""


class DataError(Exception):
    """A data set is missing, empty, malformed or unreadable; the message names the path."""
