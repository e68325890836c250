"""WhiteNoise for the app's static files, minus the widget script, which its own view serves (gzipped, CORS)."""

from __future__ import annotations

from typing import Any

from whitenoise.middleware import WhiteNoiseMiddleware

OWN_VIEWS = ("/static/switchboard/widget.js",)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for url in OWN_VIEWS:
            self.files.pop(url, None)
