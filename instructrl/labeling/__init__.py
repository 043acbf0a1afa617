"""The human-feedback labeling web app: prompt intake, demonstration / ranking / A/B tasks, quality, export.

`instructrl label serve` runs it. Layout (after full-stack-fastapi-template): `api/routes/*` call the typed
service functions in `services/*`, which work on the SQLAlchemy models in `models.py`; request and response
bodies are the Pydantic schemas in `schemas.py`; settings come from `core/config.py`.
"""
