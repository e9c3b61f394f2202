"""Errors a user can cause, and the wrapper that turns them into one sentence."""

import sys


class UserError(Exception):
    """A mistake the user can fix (config, data, missing runtime, bad checksum).

    The message is one sentence that names the file or config key and the fix.
    """


def main_guard(main):
    """Run ``main()``; a UserError ends the process with its sentence, no traceback."""
    try:
        return main()
    except UserError as err:
        print(f"infbench: {err}", file=sys.stderr)
        sys.exit(2)
