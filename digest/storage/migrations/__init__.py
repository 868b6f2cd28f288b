"""Alembic migrations (versions/); env.py is run by Alembic, never imported by digest."""
