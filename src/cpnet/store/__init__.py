"""Persistence: SQLAlchemy tables, Alembic migrations and one repository per noun."""
