"""Steps written in Python: the call of an Invoke task on one host, its ``c``, and its captured ``print``."""
