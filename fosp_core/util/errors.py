"""The one kind of error a user can fix: a bad file, config, parameter, argument or checkpoint.

``UserError`` messages name the file or key and say what was expected. The ``fosp`` command
line prints them as one line (``fosp: error: ...``) with exit code 2, and the ROS nodes as
``NODE: error: ...``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, named in the message (a ValueError, so older ``except ValueError`` holds)."""
