"""The one exception type for mistakes in the user's input."""


class InputError(Exception):
    """Bad input from the user: a missing file, a wrong column, a mismatched box size...

    The message names the file and what was expected; entry points print it in one line and exit
    with status 1 (and write ``RELION_JOB_EXIT_FAILURE`` under RELION). Any other exception is a
    bug and keeps its traceback.
    """
