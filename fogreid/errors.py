"""The package's own exceptions.

`FogreidError` is a user mistake or an unusable input (missing file, corrupt image,
checkpoint from another config): the command line prints its message and exits 2,
without a traceback. Anything else that escapes is a bug in fogreid.
"""


class FogreidError(Exception):
    """A problem the user can fix; the message names the file, what was expected and the fix."""
