"""The alignment stages as background-job stages: glue between the database (study/) and alignment/."""

from __future__ import annotations
