"""The package's own exceptions.

`FogreidError` is a user mistake or an unusable input (missing file, corrupt image,
checkpoint from another config, an option out of range): the command line prints its
message and exits 2, without a traceback. `EnvironmentProblem` is a machine that cannot do
what was asked although the request was right (no CUDA for `--device cuda`, a camera that
never answers, a full disk): exit 1. Anything else that escapes is a bug in fogreid.
"""


class FogreidError(Exception):
    """A problem the user can fix; the message names the file, what was expected and the fix."""

    exit_code = 2


class EnvironmentProblem(FogreidError):
    """The request is right but this machine cannot serve it; the message says what is missing."""

    exit_code = 1
