"""Alembic migrations (versions/); env.py is run by Alembic, never imported by digest."""

# The newest revision in versions/: the code's tables (schema.py) match it, and a test checks
# that it is Alembic's head. Here, where reading it imports nothing (snapshot.py needs it).
HEAD = "0009"
