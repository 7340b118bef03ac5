"""The one exception type that the command line turns into a one-line ``error: ...`` message."""


class UserError(Exception):
    """A problem with the user's input (file, spec, argument) rather than a bug.

    The CLI prints ``error: <message>`` on stderr and exits with status 1, without a traceback.
    The message must name the offending value (file, key, chromosome, ...).
    """
