"""Database: declarative Base, column types, engine and session makers, migrations."""
