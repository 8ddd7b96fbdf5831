"""Local runs: load ``local.env`` in development mode (``ENV`` unset or not ``production``)."""

import supervisely as sly
from dotenv import load_dotenv


def load_local_env(path: str = "local.env") -> None:
    """Load ``path`` (relative to the working directory) unless running in production on the
    platform; variables already set in the environment win."""
    if sly.is_development():
        load_dotenv(path)
