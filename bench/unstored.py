"""The app with a store that keeps nothing: what storing costs the app's POST.

`make bench` serves `bench.unstored:application` as it serves `app:application`: the same app,
hooks and answers (a 303 to the saved page), but `app.DATABASE` is replaced by a store whose
save does nothing, so the gap between the two POST rates is the save itself (the SQL, the commit
and its fsync). Only the bench has this: the product has no mode that stores nothing.
"""

import app


class KeepsNothing:
    """A store that takes each save and keeps nothing."""

    def save(self, token: str, values: dict) -> bool:
        """Do nothing, at once, and answer as a first save does."""
        return True


app.DATABASE = KeepsNothing()
application = app.application
