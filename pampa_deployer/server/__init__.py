"""The reference access point server: the protocol of docs/access-point.md over HTTP (asyncio), stored in SQLite
or PostgreSQL. Only the CLI (`pampa access-point serve`) imports it; clients speak ``accesspoint/``."""
